// Property: three databases (two SQLite, one PostgreSQL) edited at random
// with plain SQL (insert, update of one column, delete) and synced pairwise
// in random order converge to identical tables, and nothing is lost: every
// value ever written is in the final tables, or was overwritten or deleted
// on a replica that held it (a later edit that knew it), or is kept in a
// conflict log.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <set>

#include "meshsync/record.h"
#include "sql/schema.h"
#include "sql_fixture.h"

namespace meshsync::sql {
namespace {

struct Op {
  int kind = 0;  // 0 insert, 1 update, 2 delete, 3 sync
  int db = 0;
  int other = 0;  // sync partner
  int key = 0;
  int column = 0;
};

void showValue(const Op& op, std::ostream& os) {
  static const char* kKinds[] = {"insert", "update", "delete", "sync"};
  os << kKinds[op.kind] << " db" << op.db;
  if (op.kind == 3) {
    os << " with db" << (op.db + op.other) % 3;
  } else {
    os << " key " << op.key << (op.kind == 1 ? (op.column == 0 ? " a" : " b") : "");
  }
}

const std::string& PostgresDatabase() {
  static std::string url = testing::NewDatabase("postgres");
  return url;
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

RC_GTEST_PROP(SqlProperty, ThreeDatabasesConvergeAndLoseNothing, ()) {
  static int case_number = 0;
  std::string table = "p" + std::to_string(++case_number);
  std::vector<std::string> urls = {testing::NewDatabase("sqlite"), testing::NewDatabase("sqlite"),
                                   PostgresDatabase()};
  std::vector<std::unique_ptr<Connection>> dbs;
  for (const std::string& url : urls) {
    dbs.push_back(testing::Open(url));
    if (dbs.back() == nullptr) RC_FAIL("cannot open " + url);
    std::string ddl = dbs.back()->dialect() == Dialect::kSqlite
                          ? "CREATE TABLE " + table + "(k INTEGER PRIMARY KEY, a TEXT, b TEXT)"
                          : "CREATE TABLE " + table + "(k integer PRIMARY KEY, a text, b text)";
    RC_ASSERT(dbs.back()->Exec(ddl).ok());
    std::vector<std::string> t = {table};
    RC_ASSERT(Provision(*dbs.back(), t).ok());
  }
  auto sync = [&](int x, int y) {
    DatabaseOptions options;
    options.tables = {table};
    options.meta_dir = testing::TempDir() + "/meta";
    auto a = Database::Open(urls[static_cast<size_t>(x)], options);
    auto b = Database::Open(urls[static_cast<size_t>(y)], options);
    RC_ASSERT(a.ok() && b.ok());
    auto report = SyncDatabases(**a, **b, DbSyncOptions{});
    RC_ASSERT(report.ok());
    RC_ASSERT(report->problems.empty());
  };
  auto row = [&](int d, int key) {
    std::optional<std::vector<std::string>> out;
    Status s = dbs[static_cast<size_t>(d)]->Query(
        "SELECT a, b FROM " + table + " WHERE k = " + std::to_string(key), {}, [&](Row r) {
          out.emplace(r.begin(), r.end());
          return Status::Ok();
        });
    RC_ASSERT(s.ok());
    return out;
  };

  auto ops = *rc::gen::container<std::vector<Op>>(rc::gen::build<Op>(
      rc::gen::set(&Op::kind, rc::gen::weightedElement<int>({{3, 0}, {4, 1}, {1, 2}, {3, 3}})),
      rc::gen::set(&Op::db, rc::gen::inRange(0, 3)),
      rc::gen::set(&Op::other, rc::gen::inRange(1, 3)),
      rc::gen::set(&Op::key, rc::gen::inRange(1, 5)),
      rc::gen::set(&Op::column, rc::gen::inRange(0, 2))));
  if (ops.size() > 30) ops.resize(30);

  std::set<std::string> written, superseded;
  int counter = 0;
  for (const Op& op : ops) {
    Connection& db = *dbs[static_cast<size_t>(op.db)];
    if (op.kind == 3) {
      sync(op.db, (op.db + op.other) % 3);
      continue;
    }
    auto current = row(op.db, op.key);
    // What this edit overwrites on a replica that holds it.
    if (current && op.kind != 1) superseded.insert(current->begin(), current->end());
    if (current && op.kind == 1) superseded.insert((*current)[op.column == 0 ? 0 : 1]);
    std::string k = std::to_string(op.key);
    if (op.kind == 2) {
      if (current) RC_ASSERT(db.Exec("DELETE FROM " + table + " WHERE k = " + k).ok());
      continue;
    }
    std::string v1 = "v" + std::to_string(++counter), v2 = "v" + std::to_string(++counter);
    if (op.kind == 0 || !current) {
      if (current) RC_ASSERT(db.Exec("DELETE FROM " + table + " WHERE k = " + k).ok());
      RC_ASSERT(db.Exec("INSERT INTO " + table + " VALUES (" + k + ", " + Quote(v1) + ", " +
                        Quote(v2) + ")")
                    .ok());
      written.insert("v" + v1);
      written.insert("v" + v2);
    } else {
      std::string column = op.column == 0 ? "a" : "b";
      RC_ASSERT(
          db.Exec("UPDATE " + table + " SET " + column + " = " + Quote(v1) + " WHERE k = " + k)
              .ok());
      written.insert("v" + v1);
    }
  }
  // Quiesce: every pair, twice around.
  for (int round = 0; round < 2; ++round) {
    sync(0, 1);
    sync(1, 2);
    sync(0, 2);
  }
  auto dump0 = testing::Dump(*dbs[0], table);
  RC_ASSERT(dump0 == testing::Dump(*dbs[1], table));
  RC_ASSERT(dump0 == testing::Dump(*dbs[2], table));

  std::set<std::string> kept;
  for (const auto& r : dump0) kept.insert(r.begin(), r.end());
  for (const std::string& url : urls) {
    DatabaseOptions options;
    options.tables = {table};
    options.meta_dir = testing::TempDir() + "/meta";
    auto d = Database::Open(url, options);
    RC_ASSERT(d.ok());
    auto conflicts = (*d)->store().ListConflicts();
    RC_ASSERT(conflicts.ok());
    for (const ConflictRecord& c : *conflicts) {
      std::string name, value;
      if (DecodeField(c.loser_data, name, value).ok()) kept.insert(value);
    }
  }
  for (const std::string& v : written) {
    if (kept.count(v) == 0 && superseded.count(v) == 0) RC_FAIL("lost " + v);
  }
}

}  // namespace
}  // namespace meshsync::sql
