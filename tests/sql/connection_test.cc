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

INSTANTIATE_TEST_SUITE_P(Dialects, SqlStatementCacheTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });

}  // namespace
}  // namespace meshsync::sql
