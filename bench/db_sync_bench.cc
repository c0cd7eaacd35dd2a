// db_sync_bench: `meshsync db sync` of a table of ROWS rows x 6 columns,
// against the SQLite session extension's changeset apply of the same rows
// (the local limit: no metadata, no conflict detection), in one run.
//
//   db_sync_bench [--rows N] [--postgres URL] [--dir DIR]
//
// Workloads: the initial sync SQLite -> SQLite (and SQLite -> PostgreSQL
// with --postgres, a server database to create tables in), then an
// incremental set of 1,000 changes (800 rows with two columns updated, 100
// inserts, 100 deletes). meshsync's times include detecting the changes on
// both sides (reading the triggers' tracking) and committing its metadata;
// provisioning (which enrolls existing rows) is timed on its own. The
// changeset apply of the incremental set goes to a table laid out as
// meshsync's destination is (see below). Prints
// one line per measurement and then `key=value` lines for bench/db_bench.sh.
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "meshsync/env.h"
#include "sql/database.h"
#include "sql/schema.h"

namespace {

namespace fs = std::filesystem;
using meshsync::Status;
namespace sql = meshsync::sql;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Die(const std::string& what) {
  std::fprintf(stderr, "db_sync_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

sqlite3* OpenDb(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die("cannot open " + path);
  return db;
}

void Exec(sqlite3* db, const std::string& sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error != nullptr ? error : "?";
    sqlite3_free(error);
    Die(sql.substr(0, 80) + ": " + message);
  }
}

const char* kSqliteTable =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT, "
    "data BLOB)";
const char* kPostgresTable =
    "CREATE TABLE t(id bigint PRIMARY KEY, name text, qty bigint, price double precision, "
    "note text, data bytea)";

// The incremental set: 800 rows get two columns changed, 100 are inserted,
// 100 deleted.
std::string ChangeSql(int rows) {
  return "UPDATE t SET name = name || '+', qty = qty + 1 WHERE id % 125 = 0 AND id <= " +
         std::to_string(rows) + ";" +
         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) "
         "INSERT INTO t SELECT " +
         std::to_string(rows) + " + i, 'new ' || i, i, i * 0.5, 'fresh', randomblob(32) FROM n;" +
         "DELETE FROM t WHERE id % 1000 = 7;";
}

void Generate(const std::string& path, int rows) {
  sqlite3* db = OpenDb(path);
  Exec(db, kSqliteTable);
  Exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
               std::to_string(rows) +
               ") INSERT INTO t SELECT i, 'customer ' || i, i % 977, (i % 10007) * 0.25, "
               "'note for row ' || i || ' ' || hex(randomblob(8)), randomblob(24 + i % 16) FROM n");
  sqlite3_close(db);
}

int ConflictKeep(void*, int, sqlite3_changeset_iter*) { return SQLITE_CHANGESET_REPLACE; }

// Records `sql` run on a copy of `from` as a changeset, then times applying
// it to `to`.
double ChangesetApply(const std::string& dir, const std::string& from, const std::string& sql,
                      const std::string& to, size_t* changeset_bytes) {
  std::string gen = dir + "/changeset-gen.db";
  fs::remove(gen);
  fs::copy_file(from, gen);
  sqlite3* db = OpenDb(gen);
  sqlite3_session* session = nullptr;
  if (sqlite3session_create(db, "main", &session) != SQLITE_OK) Die("sqlite3session_create");
  sqlite3session_attach(session, "t");
  Exec(db, "BEGIN; " + sql + " COMMIT;");
  int size = 0;
  void* changeset = nullptr;
  if (sqlite3session_changeset(session, &size, &changeset) != SQLITE_OK) Die("changeset");
  sqlite3session_delete(session);
  sqlite3_close(db);
  *changeset_bytes = static_cast<size_t>(size);
  sqlite3* target = OpenDb(to);
  double start = Now();
  if (sqlite3changeset_apply(target, size, changeset, nullptr, ConflictKeep, nullptr) != SQLITE_OK)
    Die(std::string("changeset apply: ") + sqlite3_errmsg(target));
  double took = Now() - start;
  sqlite3_free(changeset);
  sqlite3_close(target);
  return took;
}

struct Timed {
  double seconds = 0;
  uint64_t applied = 0;
};

Timed MeshsyncSync(const std::string& a, const std::string& b, const std::string& meta) {
  sql::DatabaseOptions options;
  options.meta_dir = meta;
  double start = Now();
  auto da = sql::Database::Open(a, options);
  if (!da.ok()) Die(da.status().ToString());
  auto db = sql::Database::Open(b, options);
  if (!db.ok()) Die(db.status().ToString());
  sql::DbSyncOptions sync;  // the defaults `meshsync db sync` runs with
  auto report = sql::SyncDatabases(**da, **db, sync);
  if (!report.ok()) Die(report.status().ToString());
  if (!report->problems.empty()) Die(report->problems.front());
  // Closing is part of the run: SQLite checkpoints a metadata store's
  // write-ahead log when its last connection closes.
  da->reset();
  db->reset();
  Timed t;
  t.seconds = Now() - start;
  t.applied = report->a_to_b.created + report->a_to_b.updated + report->a_to_b.deleted;
  return t;
}

double Provision(const std::string& url) {
  double start = Now();
  auto db = sql::Connect(url);
  if (!db.ok()) Die(db.status().ToString());
  std::vector<std::string> tables = {"t"};
  Check(sql::Provision(**db, tables), "provision");
  return Now() - start;
}

}  // namespace

int main(int argc, char** argv) {
  // The heap `meshsync db` runs with (apps/meshsync/main.cc), for both sides.
  meshsync::ReexecWithHugePageHeap(argv);
  int rows = 100000;
  std::string postgres;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--rows" && i + 1 < argc) {
      rows = std::atoi(argv[++i]);
    } else if (arg == "--postgres" && i + 1 < argc) {
      postgres = argv[++i];
    } else if (arg == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: db_sync_bench [--rows N] [--postgres URL] [--dir DIR]\n");
      return 2;
    }
  }
  if (rows < 1000) Die("--rows must be at least 1000");
  bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/meshsync-db-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Die("mkdtemp");
    dir = tmpl;
  }
  std::string source = dir + "/source.db";
  Generate(source, rows);
  std::string change_sql = ChangeSql(rows);
  std::printf("%d rows x 6 columns (%.1f MiB); incremental set: 1,000 changes\n", rows,
              static_cast<double>(fs::file_size(source)) / (1 << 20));

  // The reference: the session extension's changeset of the same rows.
  std::string ref = dir + "/reference.db";
  {
    sqlite3* db = OpenDb(ref);
    Exec(db, kSqliteTable);
    sqlite3_close(db);
  }
  std::string empty = dir + "/empty.db";
  fs::copy_file(ref, empty);
  size_t bytes = 0;
  double ref_initial = ChangesetApply(
      dir, empty, "ATTACH '" + source + "' AS src; INSERT INTO t SELECT * FROM src.t;", ref,
      &bytes);
  std::printf("  changeset apply, initial       %8.3f s   (%.1f MiB changeset)\n", ref_initial,
              static_cast<double>(bytes) / (1 << 20));

  // meshsync, SQLite -> SQLite.
  std::string a = dir + "/a.db", b = dir + "/b.db";
  fs::copy_file(source, a);
  {
    sqlite3* db = OpenDb(b);
    Exec(db, kSqliteTable);
    sqlite3_close(db);
  }
  double provision = Provision("sqlite:" + a);
  Provision("sqlite:" + b);
  std::printf("  meshsync provision (enrol)     %8.3f s\n", provision);
  Timed initial = MeshsyncSync("sqlite:" + a, "sqlite:" + b, dir + "/meta");
  std::printf("  meshsync sqlite->sqlite, initial %6.3f s   (%llu rows)\n", initial.seconds,
              static_cast<unsigned long long>(initial.applied));

  // The incremental set, both ways of applying it. The changeset goes to a
  // table laid out as meshsync's destination is: filled in key order, its
  // pages full, so that a row that grows splits its page. The reference's
  // own table was filled in the changeset's (hash) order, which leaves a
  // quarter of each page free: the same changes cost it a third less there
  // (0.040 against 0.055 s), which measures the layout, not the apply. Both
  // are printed.
  std::string before = dir + "/source-synced.db";
  fs::copy_file(source, before);
  std::string same_layout = dir + "/reference-key-order.db";
  fs::copy_file(source, same_layout);
  double ref_incremental = ChangesetApply(dir, before, change_sql, same_layout, &bytes);
  double ref_incremental_loose = ChangesetApply(dir, before, change_sql, ref, &bytes);
  std::printf(
      "  changeset apply, incremental   %8.3f s   (%.3f s on its own table, filled in"
      " hash order)\n",
      ref_incremental, ref_incremental_loose);
  {
    sqlite3* db = OpenDb(a);
    Exec(db, "BEGIN; " + change_sql + " COMMIT;");
    sqlite3_close(db);
  }
  Timed incremental = MeshsyncSync("sqlite:" + a, "sqlite:" + b, dir + "/meta");
  std::printf("  meshsync sqlite->sqlite, incr.   %6.3f s   (%llu rows)\n", incremental.seconds,
              static_cast<unsigned long long>(incremental.applied));

  Timed pg_initial, pg_incremental;
  if (!postgres.empty()) {
    auto admin = sql::Connect(postgres);
    if (!admin.ok()) Die(admin.status().ToString());
    std::string name = "bench_" + std::to_string(getpid());
    Check((*admin)->Exec("CREATE DATABASE " + name), "create database");
    std::string pg = postgres.substr(0, postgres.rfind('/') + 1) + name;
    {
      auto db = sql::Connect(pg);
      if (!db.ok()) Die(db.status().ToString());
      Check((*db)->Exec(kPostgresTable), "create table");
    }
    Provision(pg);
    std::string c = dir + "/c.db";
    fs::copy_file(source, c);
    Provision("sqlite:" + c);
    pg_initial = MeshsyncSync("sqlite:" + c, pg, dir + "/meta");
    std::printf("  meshsync sqlite->postgres, initial %4.3f s   (%llu rows)\n", pg_initial.seconds,
                static_cast<unsigned long long>(pg_initial.applied));
    {
      sqlite3* db = OpenDb(c);
      Exec(db, "BEGIN; " + change_sql + " COMMIT;");
      sqlite3_close(db);
    }
    pg_incremental = MeshsyncSync("sqlite:" + c, pg, dir + "/meta");
    std::printf("  meshsync sqlite->postgres, incr.   %4.3f s   (%llu rows)\n",
                pg_incremental.seconds, static_cast<unsigned long long>(pg_incremental.applied));
  }
  std::printf("ref_initial=%.4f\nref_incremental=%.4f\nms_initial=%.4f\nms_incremental=%.4f\n",
              ref_initial, ref_incremental, initial.seconds, incremental.seconds);
  std::printf("ms_provision=%.4f\nref_incremental_hash_order=%.4f\n", provision,
              ref_incremental_loose);
  if (!postgres.empty()) {
    std::printf("pg_initial=%.4f\npg_incremental=%.4f\n", pg_initial.seconds,
                pg_incremental.seconds);
  }
  if (own_dir) fs::remove_all(dir);
  return 0;
}
