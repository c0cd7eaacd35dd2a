// The relational provider's connections, against a real SQLite file and a
// real PostgreSQL server: the prepared statements each keeps stay bounded,
// and none is dropped while it runs.
#include "sql/connection.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sql_fixture.h"

namespace meshsync::sql {
namespace {

using testing::Exec;
using testing::NewDatabase;
using testing::Open;

class SqlStatementCacheTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    url_ = NewDatabase(GetParam());
    db_ = Open(url_);
    ASSERT_NE(db_, nullptr);
  }

  // Runs "SELECT n" and returns what it read, or "" on failure.
  std::string SelectNumber(int n) {
    std::string value;
    Status s = db_->Query("SELECT " + std::to_string(n), {}, [&](Row row) {
      value = row[0];
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return value;
  }

  // The statements the server holds for this session (PostgreSQL only).
  int ServerStatements() {
    std::string count;
    Status s = db_->Query("SELECT count(*) FROM pg_prepared_statements", {}, [&](Row row) {
      count = row[0];
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return count.size() > 1 ? std::stoi(count.substr(1)) : -1;
  }

  std::string url_;
  std::unique_ptr<Connection> db_;
};

TEST_P(SqlStatementCacheTest, ReusesAStatementForTheSameText) {
  EXPECT_EQ(SelectNumber(7), "v7");
  EXPECT_EQ(SelectNumber(7), "v7");
  EXPECT_EQ(db_->CachedStatements(), 1u);
  EXPECT_EQ(SelectNumber(8), "v8");
  EXPECT_EQ(db_->CachedStatements(), 2u);
}

TEST_P(SqlStatementCacheTest, KeepsAtMostTheMaxStatementsAndAnswersRightAfterDroppingOnes) {
  const int n = static_cast<int>(kMaxCachedStatements) + 60;
  for (int i = 0; i < n; ++i) ASSERT_EQ(SelectNumber(i), "v" + std::to_string(i));
  EXPECT_EQ(db_->CachedStatements(), kMaxCachedStatements);
  // The first ones were dropped; running them again prepares them again.
  for (int i = 0; i < 10; ++i) ASSERT_EQ(SelectNumber(i), "v" + std::to_string(i));
  EXPECT_EQ(db_->CachedStatements(), kMaxCachedStatements);
  if (GetParam() == "postgres") {
    // Dropped means freed on the server too (the count's own statement is
    // the one more).
    EXPECT_LE(ServerStatements(), static_cast<int>(kMaxCachedStatements) + 1);
  }
}

TEST_P(SqlStatementCacheTest, AQueryGoesOnWhileItsRowCallbackFillsTheCache) {
  Exec(*db_, "CREATE TABLE t (v INTEGER PRIMARY KEY)");
  Exec(*db_, "INSERT INTO t VALUES (1), (2), (3), (4), (5)");
  std::vector<std::string> seen;
  int next = 1000;
  Status s = db_->Query("SELECT v FROM t ORDER BY v", {}, [&](Row row) {
    seen.push_back(row[0]);
    // Enough new statements to evict everything that is not running.
    for (size_t i = 0; i < kMaxCachedStatements; ++i) {
      if (SelectNumber(next) != "v" + std::to_string(next)) return InternalError("wrong answer");
      ++next;
    }
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{"v1", "v2", "v3", "v4", "v5"}));
  EXPECT_LE(db_->CachedStatements(), kMaxCachedStatements + 1);
}

TEST_P(SqlStatementCacheTest, StatementsDroppedInATransactionLeaveItsWorkWhole) {
  Exec(*db_, "CREATE TABLE t (v INTEGER PRIMARY KEY)");
  Exec(*db_, "BEGIN");
  for (int i = 0; i < static_cast<int>(kMaxCachedStatements) + 20; ++i) {
    Param p{"v" + std::to_string(i), Kind::kInteger};
    // A text per row, so that the cache drops statements mid-transaction.
    ASSERT_TRUE(
        db_->Query("INSERT INTO t (v) VALUES (" + db_->Placeholder(1) + ") -- " + std::to_string(i),
                   std::span(&p, 1), [](Row) { return Status::Ok(); })
            .ok());
  }
  Exec(*db_, "COMMIT");
  EXPECT_EQ(testing::Dump(*db_, "t").size(), kMaxCachedStatements + 20);
  if (GetParam() == "postgres") {
    // Freed on the server once the transaction ended.
    EXPECT_LE(ServerStatements(), static_cast<int>(kMaxCachedStatements) + 1);
  }
}

// The same connections, for what they do with values and rows.
class SqlConnectionTest : public SqlStatementCacheTest {};

TEST_P(SqlConnectionTest, ExecuteCountsTheRowsAStatementWroteItself) {
  Exec(*db_, "CREATE TABLE t(id integer PRIMARY KEY, v text); CREATE TABLE seen(id integer)");
  // The application's trigger writes too: not counted.
  Exec(*db_, GetParam() == "postgres"
                 ? "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "INSERT INTO seen VALUES (NEW.id); RETURN NEW; END $$; "
                   "CREATE TRIGGER note AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION note()"
                 : "CREATE TRIGGER note AFTER INSERT ON t BEGIN "
                   "INSERT INTO seen VALUES (NEW.id); END");
  Exec(*db_, "INSERT INTO t VALUES (2, 'there')");
  std::vector<Param> params = {{"v1", Kind::kInteger}, {"vone", Kind::kText},
                               {"v2", Kind::kInteger}, {"vtwo", Kind::kText},
                               {"v3", Kind::kInteger}, {"vthree", Kind::kText}};
  std::string sql = "INSERT INTO t VALUES (" + db_->Placeholder(1) + ", " + db_->Placeholder(2) +
                    "), (" + db_->Placeholder(3) + ", " + db_->Placeholder(4) + "), (" +
                    db_->Placeholder(5) + ", " + db_->Placeholder(6) + ") ON CONFLICT DO NOTHING";
  Result<int64_t> written = db_->Execute(sql, params);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_EQ(*written, 2);  // row 2 was there
  EXPECT_EQ(testing::Dump(*db_, "seen").size(), 3u);
  written = db_->Execute("DELETE FROM t", {});
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_EQ(*written, 3);
  EXPECT_EQ(db_->Execute("SELECT 1", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(db_->Execute("INSERT INTO nowhere VALUES (1)", {}).ok());
}

// Where StoresAsGiven says a value is stored as given, reading it back must
// give it unchanged (a sync's INSERT then skips reading rows back, and the
// hashes it keeps would otherwise disagree with the row). Every declared
// type meets every kind of value, as SQLite stores them in a real table.
TEST_P(SqlConnectionTest, AValueStoredAsGivenReadsBackUnchanged) {
  const std::vector<std::string> declared = {
      "INTEGER",     "BIGINT",  "REAL",          "DOUBLE PRECISION",
      "FLOAT",       "NUMERIC", "DECIMAL(10,2)", "TEXT",
      "VARCHAR(20)", "CLOB",    "BLOB",          "",
      "BOOLEAN",     "DATE",    "DATETIME",      "UUID",
      "JSON"};
  const std::vector<Param> values = {
      {"N", Kind::kText},           {std::string("b\x00\xff", 3), Kind::kBlob},
      {"v42", Kind::kInteger},      {"v-7", Kind::kInteger},
      {"v007", Kind::kInteger},     {"v+5", Kind::kInteger},
      {"v1", Kind::kBoolean},       {"v2.5", Kind::kReal},
      {"v2", Kind::kReal},          {"v2.50", Kind::kReal},
      {"v1e300", Kind::kReal},      {"v-0", Kind::kReal},
      {"vinf", Kind::kReal},        {"vnan", Kind::kReal},
      {"v12", Kind::kText},         {"v 12 ", Kind::kText},
      {"v2.50", Kind::kNumeric},    {"v1e3", Kind::kText},
      {"vabc", Kind::kText},        {"vInf", Kind::kText},
      {"v", Kind::kText},           {"v2024-02-29", Kind::kDate},
      {"v{\"a\": 1}", Kind::kJson}, {"va0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", Kind::kUuid}};
  if (GetParam() == "postgres") {
    for (const std::string& type : declared) {
      for (const Param& p : values) {
        EXPECT_FALSE(db_->StoresAsGiven(p, SqliteAffinity(type))) << "PostgreSQL parses values";
      }
    }
    return;
  }
  int as_given = 0;
  for (size_t d = 0; d < declared.size(); ++d) {
    std::string table = "t" + std::to_string(d);
    Exec(*db_, "CREATE TABLE " + table + "(id integer PRIMARY KEY, v " + declared[d] + ")");
    for (size_t i = 0; i < values.size(); ++i) {
      const Param& p = values[i];
      bool claimed = db_->StoresAsGiven(p, SqliteAffinity(declared[d]));
      std::vector<Param> params = {{"v" + std::to_string(i), Kind::kInteger}, p};
      Result<int64_t> written =
          db_->Execute("INSERT INTO " + table + " VALUES (" + db_->Placeholder(1) + ", " +
                           db_->Placeholder(2) + ")",
                       params);
      ASSERT_TRUE(written.ok()) << written.status().ToString();
      std::string back;
      ASSERT_TRUE(db_->Query("SELECT v FROM " + table + " WHERE id = " + std::to_string(i), {},
                             [&back](Row row) {
                               back = row[0];
                               return Status::Ok();
                             })
                      .ok());
      if (claimed) {
        ++as_given;
        EXPECT_EQ(back, p.value) << "declared '" << declared[d] << "', value " << p.value;
      }
    }
  }
  // The common cases take the fast way: a value of a column's own kind.
  auto affinity = [](const char* type) { return SqliteAffinity(type); };
  EXPECT_TRUE(db_->StoresAsGiven({"v42", Kind::kInteger}, affinity("INTEGER")));
  EXPECT_TRUE(db_->StoresAsGiven({"v2.5", Kind::kReal}, affinity("REAL")));
  EXPECT_TRUE(db_->StoresAsGiven({"vnote 12", Kind::kText}, affinity("TEXT")));
  EXPECT_TRUE(db_->StoresAsGiven({"bxyz", Kind::kBlob}, affinity("NUMERIC")));
  EXPECT_TRUE(db_->StoresAsGiven({"N", Kind::kReal}, affinity("INTEGER")));
  // And what SQLite would change does not.
  EXPECT_FALSE(db_->StoresAsGiven({"v42", Kind::kInteger}, affinity("REAL")));
  EXPECT_FALSE(db_->StoresAsGiven({"v2.50", Kind::kReal}, affinity("REAL")));
  EXPECT_FALSE(db_->StoresAsGiven({"v2", Kind::kReal}, affinity("NUMERIC")));
  EXPECT_FALSE(db_->StoresAsGiven({"v12", Kind::kText}, affinity("INTEGER")));
  EXPECT_GT(as_given, 100);
}

// A database that keeps its text in UTF-16 converts what it is given: text
// that is not UTF-8 comes back changed, so no text is taken as stored.
TEST(SqlConnection, TextIsNotTakenAsStoredInAUtf16Database) {
  std::string url = NewDatabase("sqlite");
  {
    auto maker = Open(url);
    ASSERT_NE(maker, nullptr);
    Exec(*maker, "PRAGMA encoding = 'UTF-16le'; CREATE TABLE t(id integer PRIMARY KEY, v TEXT)");
  }
  auto db = Open(url);
  ASSERT_NE(db, nullptr);
  Param odd{std::string("v\xff\xfe not UTF-8"), Kind::kText};
  EXPECT_FALSE(db->StoresAsGiven(odd, Affinity::kText));
  EXPECT_FALSE(db->StoresAsGiven({"vplain", Kind::kText}, Affinity::kText));
  EXPECT_TRUE(db->StoresAsGiven({"v42", Kind::kInteger}, Affinity::kInteger));
  EXPECT_TRUE(db->StoresAsGiven({"bxyz", Kind::kBlob}, Affinity::kText));
  std::vector<Param> params = {{"v1", Kind::kInteger}, odd};
  ASSERT_TRUE(db->Execute("INSERT INTO t VALUES (?1, ?2)", params).ok());
  std::string back;
  ASSERT_TRUE(db->Query("SELECT v FROM t", {}, [&back](Row row) {
                  back = row[0];
                  return Status::Ok();
                }).ok());
  EXPECT_NE(back, odd.value);  // why: the bytes did not survive
}

TEST(SqliteAffinityTest, FollowsSqlitesRules) {
  EXPECT_EQ(SqliteAffinity("INTEGER"), Affinity::kInteger);
  EXPECT_EQ(SqliteAffinity("tinyint"), Affinity::kInteger);
  EXPECT_EQ(SqliteAffinity("POINT"), Affinity::kInteger);  // "INT" anywhere
  EXPECT_EQ(SqliteAffinity("VARCHAR(255)"), Affinity::kText);
  EXPECT_EQ(SqliteAffinity("character varying"), Affinity::kText);
  EXPECT_EQ(SqliteAffinity("CLOB"), Affinity::kText);
  EXPECT_EQ(SqliteAffinity("BLOB"), Affinity::kBlob);
  EXPECT_EQ(SqliteAffinity(""), Affinity::kBlob);
  EXPECT_EQ(SqliteAffinity("DOUBLE PRECISION"), Affinity::kReal);
  EXPECT_EQ(SqliteAffinity("float"), Affinity::kReal);
  EXPECT_EQ(SqliteAffinity("NUMERIC"), Affinity::kNumeric);
  EXPECT_EQ(SqliteAffinity("BOOLEAN"), Affinity::kNumeric);
  EXPECT_EQ(SqliteAffinity("DATE"), Affinity::kNumeric);
  EXPECT_EQ(SqliteAffinity("bytea"), Affinity::kNumeric);
  EXPECT_EQ(SqliteAffinity("FLOATING POINT"), Affinity::kInteger);  // INT comes first
}

INSTANTIATE_TEST_SUITE_P(Dialects, SqlStatementCacheTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });
INSTANTIATE_TEST_SUITE_P(Dialects, SqlConnectionTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });

}  // namespace
}  // namespace meshsync::sql
