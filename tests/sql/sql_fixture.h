// Test databases for the relational provider: fresh SQLite files and fresh
// databases on the real PostgreSQL server that ctest's "postgres" fixture
// starts (testing/postgres.sh; its URL in $MESHSYNC_PG_URL_FILE).
#ifndef MESHSYNC_TESTS_SQL_SQL_FIXTURE_H_
#define MESHSYNC_TESTS_SQL_SQL_FIXTURE_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "sql/connection.h"
#include "sql/database.h"

namespace meshsync::sql::testing {

// A directory of this process's own, removed when the process ends.
inline std::string TempDir() {
  struct Dir {
    std::string path;
    Dir() {
      std::string tmpl = (std::filesystem::temp_directory_path() / "meshsync-sql-XXXXXX").string();
      if (mkdtemp(tmpl.data()) != nullptr) path = tmpl;
    }
    ~Dir() {
      std::error_code ec;
      if (!path.empty()) std::filesystem::remove_all(path, ec);
    }
  };
  static Dir dir;
  EXPECT_FALSE(dir.path.empty()) << "mkdtemp failed";
  return dir.path;
}

// The server's URL (a database named "postgres"); fails the test if the
// fixture did not start one.
inline std::string PostgresUrl() {
  const char* file = std::getenv("MESHSYNC_PG_URL_FILE");
#ifdef MESHSYNC_PG_URL_FILE_DEFAULT
  if (file == nullptr) file = MESHSYNC_PG_URL_FILE_DEFAULT;
#endif
  std::string url;
  if (file != nullptr) {
    std::ifstream in(file);
    std::getline(in, url);
  }
  if (url.empty()) {
    ADD_FAILURE() << "no PostgreSQL server: run through ctest (fixture 'postgres'), or set "
                     "MESHSYNC_PG_URL_FILE to a file holding a server's URL";
  }
  return url;
}

// A new, empty database: "sqlite" or "postgres". Returns its URL.
inline std::string NewDatabase(const std::string& kind) {
  static std::atomic<int> counter{0};
  std::string name = "t" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  if (kind == "sqlite") {
    std::string path = TempDir() + "/" + name + ".db";
    std::ofstream(path).close();  // an empty file is an empty database
    return "sqlite:" + path;
  }
  std::string server = PostgresUrl();
  auto admin = Connect(server);
  EXPECT_TRUE(admin.ok()) << admin.status().ToString();
  if (!admin.ok()) return "";
  EXPECT_TRUE((*admin)->Exec("CREATE DATABASE " + name).ok());
  return server.substr(0, server.rfind('/') + 1) + name;
}

inline std::unique_ptr<Connection> Open(const std::string& url) {
  auto c = Connect(url);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

inline void Exec(Connection& db, const std::string& sql) {
  Status s = db.Exec(sql);
  ASSERT_TRUE(s.ok()) << sql << ": " << s.ToString();
}

// Every row of `table`, ordered by its first column, values encoded.
inline std::vector<std::vector<std::string>> Dump(Connection& db, const std::string& table) {
  std::vector<std::vector<std::string>> rows;
  Status s = db.Query("SELECT * FROM " + *QuoteIdent(table) + " ORDER BY 1", {}, [&](Row r) {
    rows.emplace_back(r.begin(), r.end());
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return rows;
}

inline std::unique_ptr<Database> OpenReplica(const std::string& url,
                                             std::vector<std::string> tables = {}) {
  DatabaseOptions options;
  options.tables = std::move(tables);
  options.meta_dir = TempDir() + "/meta";
  auto d = Database::Open(url, options);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? std::move(*d) : nullptr;
}

// Syncs a and b (opening and closing both, as the CLI does).
inline Result<DbSyncReport> SyncUrls(const std::string& a, const std::string& b,
                                     DbSyncOptions options = {}) {
  DatabaseOptions open;
  open.meta_dir = TempDir() + "/meta";
  MESHSYNC_ASSIGN_OR_RETURN(auto ra, Database::Open(a, open));
  MESHSYNC_ASSIGN_OR_RETURN(auto rb, Database::Open(b, open));
  return SyncDatabases(*ra, *rb, options);
}

}  // namespace meshsync::sql::testing

#endif  // MESHSYNC_TESTS_SQL_SQL_FIXTURE_H_
