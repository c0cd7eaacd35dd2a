// The relational provider against real databases: every conflict case,
// every type, application writes during a sync, interruption, locking, and
// hostile names and schemas. Each case runs for SQLite <-> SQLite, SQLite <->
// PostgreSQL and PostgreSQL <-> PostgreSQL.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>

#include "meshsync/record.h"
#include "sql/schema.h"
#include "sql/table_provider.h"
#include "sql_fixture.h"

namespace meshsync::sql {
namespace {

using testing::Dump;
using testing::Exec;
using testing::NewDatabase;
using testing::Open;
using testing::OpenReplica;
using testing::SyncUrls;

struct Pair {
  std::string a, b;
  friend void PrintTo(const Pair& p, std::ostream* os) { *os << p.a << " <-> " << p.b; }
};

std::string ContactsDdl(Dialect d) {
  return d == Dialect::kSqlite
             ? "CREATE TABLE contacts(id INTEGER PRIMARY KEY, name TEXT, phone TEXT, email TEXT, "
               "score REAL)"
             : "CREATE TABLE contacts(id bigint PRIMARY KEY, name text, phone text, email text, "
               "score double precision)";
}

class SqlSyncTest : public ::testing::TestWithParam<Pair> {
 protected:
  void SetUp() override {
    url_a_ = NewDatabase(GetParam().a);
    url_b_ = NewDatabase(GetParam().b);
    ASSERT_FALSE(url_a_.empty());
    ASSERT_FALSE(url_b_.empty());
    a_ = Open(url_a_);
    b_ = Open(url_b_);
    ASSERT_TRUE(a_ && b_);
  }

  void MakeContacts() {
    Exec(*a_, ContactsDdl(a_->dialect()));
    Exec(*b_, ContactsDdl(b_->dialect()));
    std::vector<std::string> t = {"contacts"};
    ASSERT_TRUE(Provision(*a_, t).ok());
    ASSERT_TRUE(Provision(*b_, t).ok());
  }

  // Rows 1..count of contacts in `db`: name "nI", no phone or email.
  void InsertContacts(Connection& db, int count) {
    std::string values;
    for (int i = 1; i <= count; ++i) {
      values += (i > 1 ? "," : "") + std::string("(") + std::to_string(i) + ", 'n" +
                std::to_string(i) + "', NULL, NULL, " + std::to_string(i) + ")";
    }
    Exec(db, "INSERT INTO contacts VALUES " + values);
  }

  DbSyncReport Sync(DbSyncOptions options = {}) {
    auto r = SyncUrls(url_a_, url_b_, options);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    EXPECT_TRUE(r->problems.empty()) << r->problems.front();
    return *r;
  }

  std::vector<ConflictRecord> Conflicts(const std::string& url) {
    auto d = OpenReplica(url);
    auto c = d->store().ListConflicts();
    EXPECT_TRUE(c.ok());
    return c.ok() ? *c : std::vector<ConflictRecord>{};
  }

  // One session from A to B, after both sides scanned and then the
  // application ran `write_b` on B: a write the session cannot know about.
  Result<SyncReport> SyncAfterScans(const std::string& write_b,
                                    SyncDirection direction = SyncDirection::kTwoWay) {
    auto ra = OpenReplica(url_a_);
    auto rb = OpenReplica(url_b_);
    MESHSYNC_RETURN_IF_ERROR(ra->replica().DetectChanges());
    MESHSYNC_RETURN_IF_ERROR(rb->replica().DetectChanges());
    Exec(*b_, write_b);
    SyncOptions once;
    once.detect_changes = false;
    once.direction = direction;
    return Synchronize(ra->replica(), rb->replica(), once);
  }

  void ExpectSame(const std::string& table) {
    auto da = Dump(*a_, table);
    auto db = Dump(*b_, table);
    EXPECT_EQ(da, db);
  }

  std::string url_a_, url_b_;
  std::unique_ptr<Connection> a_, b_;
};

TEST_P(SqlSyncTest, InitialSyncBothWaysThenIncrementalChanges) {
  MakeContacts();
  Exec(*a_,
       "INSERT INTO contacts VALUES (1, 'Ann', '111', NULL, 1.5), (2, 'Bob', NULL, 'b@x', 0.1)");
  Exec(*b_, "INSERT INTO contacts VALUES (3, 'Cy', '333', NULL, -2)");
  DbSyncReport r = Sync();
  EXPECT_EQ(r.a_to_b.created, 2u);
  EXPECT_EQ(r.b_to_a.created, 1u);
  ExpectSame("contacts");
  EXPECT_EQ(Dump(*a_, "contacts").size(), 3u);

  Exec(*a_, "UPDATE contacts SET phone = '222' WHERE id = 2");
  Exec(*b_, "DELETE FROM contacts WHERE id = 1");
  r = Sync();
  EXPECT_EQ(r.a_to_b.updated, 1u);
  EXPECT_EQ(r.b_to_a.deleted, 1u);
  ExpectSame("contacts");
  EXPECT_EQ(Dump(*a_, "contacts").size(), 2u);

  // Nothing changed: nothing moves.
  r = Sync();
  EXPECT_EQ(r.a_to_b.created + r.a_to_b.updated + r.a_to_b.deleted, 0u);
  EXPECT_EQ(r.b_to_a.created + r.b_to_a.updated + r.b_to_a.deleted, 0u);
}

TEST_P(SqlSyncTest, ConcurrentEditsOfDifferentColumnsMerge) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', '111', 'a@x', 1)");
  Sync();
  Exec(*a_, "UPDATE contacts SET name = 'Anne' WHERE id = 1");
  Exec(*b_, "UPDATE contacts SET phone = '999', email = 'ann@y' WHERE id = 1");
  DbSyncReport r = Sync();
  EXPECT_EQ(r.a_to_b.conflicts + r.b_to_a.conflicts, 0u);
  ExpectSame("contacts");
  auto rows = Dump(*a_, "contacts");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][1], "vAnne");
  EXPECT_EQ(rows[0][2], "v999");
  EXPECT_EQ(rows[0][3], "vann@y");
}

TEST_P(SqlSyncTest, SameColumnHasOneWinnerAndTheLoserIsLogged) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', '111', NULL, 1)");
  Sync();
  Exec(*a_, "UPDATE contacts SET phone = 'from-a' WHERE id = 1");
  Exec(*b_, "UPDATE contacts SET phone = 'from-b' WHERE id = 1");
  DbSyncReport r = Sync();
  EXPECT_EQ(r.a_to_b.conflicts + r.b_to_a.conflicts, 1u);
  ExpectSame("contacts");
  std::string kept = Dump(*a_, "contacts")[0][2];
  ASSERT_TRUE(kept == "vfrom-a" || kept == "vfrom-b") << kept;
  std::string lost = kept == "vfrom-a" ? "vfrom-b" : "vfrom-a";
  // The losing value is in a conflict log, with its column.
  std::vector<ConflictRecord> all = Conflicts(url_a_);
  for (const ConflictRecord& c : Conflicts(url_b_)) all.push_back(c);
  ASSERT_EQ(all.size(), 1u);
  std::string column, value;
  ASSERT_TRUE(DecodeField(all[0].loser_data, column, value).ok());
  EXPECT_EQ(column, "phone");
  EXPECT_EQ(value, lost);
}

TEST_P(SqlSyncTest, UpdateBeatsConcurrentDeleteAndRestoresTheRow) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', '111', NULL, 1), (2, 'Bob', '2', NULL, 2)");
  Sync();
  Exec(*a_, "DELETE FROM contacts WHERE id = 1");
  Exec(*b_, "UPDATE contacts SET name = 'Ann B' WHERE id = 1");
  Exec(*a_, "UPDATE contacts SET name = 'Bob A' WHERE id = 2");
  Exec(*b_, "DELETE FROM contacts WHERE id = 2");
  Sync();
  ExpectSame("contacts");
  auto rows = Dump(*a_, "contacts");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][1], "vAnn B");
  EXPECT_EQ(rows[0][2], "v111");  // the whole row is back, not just the edited column
  EXPECT_EQ(rows[1][1], "vBob A");
}

TEST_P(SqlSyncTest, PolicyCanLetADeleteWin) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', '111', NULL, 1)");
  Sync();
  Exec(*a_, "DELETE FROM contacts WHERE id = 1");
  Exec(*b_, "UPDATE contacts SET name = 'Ann B' WHERE id = 1");
  DbSyncOptions options;
  options.policy = DbPolicy::kAWins;
  Sync(options);
  ExpectSame("contacts");
  EXPECT_TRUE(Dump(*a_, "contacts").empty());
}

TEST_P(SqlSyncTest, SameKeyInsertedOnBothSidesIsOneRowMergedByColumn) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (7, 'Gus', '777', NULL, 7)");
  Exec(*b_, "INSERT INTO contacts VALUES (7, 'Gus', '777', 'gus@b', 7)");
  DbSyncReport r = Sync();
  ExpectSame("contacts");
  auto rows = Dump(*a_, "contacts");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][1], "vGus");
  // Equal columns are no conflict; only email differed.
  EXPECT_EQ(r.a_to_b.conflicts + r.b_to_a.conflicts, 1u);
}

TEST_P(SqlSyncTest, ApplicationWriteBetweenScanAndApplyIsNeverOverwritten) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', '111', NULL, 1)");
  Sync();
  Exec(*a_, "UPDATE contacts SET phone = 'remote' WHERE id = 1");
  // The application writes B after B's scan, before the change arrives.
  auto r = SyncAfterScans("UPDATE contacts SET phone = 'local' WHERE id = 1");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->a_to_b.errors.size(), 1u);  // refused, not overwritten
  EXPECT_EQ(Dump(*b_, "contacts")[0][2], "vlocal");
  // The next sync sees both edits as what they are: a conflict.
  DbSyncReport again = Sync();
  EXPECT_EQ(again.a_to_b.conflicts + again.b_to_a.conflicts, 1u);
  ExpectSame("contacts");
}

// Rows are saved in groups that share a savepoint: one refused row in a
// group must not take the others down with it, nor be overwritten.
TEST_P(SqlSyncTest, ARefusedRowInABatchLeavesTheOthersApplied) {
  MakeContacts();
  InsertContacts(*a_, 600);
  auto r = SyncAfterScans("INSERT INTO contacts VALUES (300, 'local', NULL, NULL, 300)",
                          SyncDirection::kAToB);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->a_to_b.created, 599u);
  ASSERT_EQ(r->a_to_b.errors.size(), 1u);
  auto rows = Dump(*b_, "contacts");
  ASSERT_EQ(rows.size(), 600u);
  EXPECT_EQ(rows[299][1], "vlocal");
  EXPECT_EQ(rows[298][1], "vn299");
  EXPECT_EQ(rows[300][1], "vn301");

  Sync();
  ExpectSame("contacts");
  Exec(*a_, "UPDATE contacts SET phone = 'remote'");
  r = SyncAfterScans("UPDATE contacts SET phone = 'local' WHERE id = 450", SyncDirection::kAToB);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->a_to_b.updated, 599u);
  EXPECT_EQ(r->a_to_b.errors.size(), 1u);
  rows = Dump(*b_, "contacts");
  EXPECT_EQ(rows[449][2], "vlocal");
  EXPECT_EQ(rows[448][2], "vremote");
  EXPECT_EQ(rows[599][2], "vremote");
}

// A row the destination's database refuses (here a trigger of the
// application's) fails the statement that inserts its group: the group is
// undone and saved again a row at a time, so only that row is skipped. On
// PostgreSQL the failed statement also aborts the transaction until the
// group's savepoint is rolled back.
TEST_P(SqlSyncTest, ARowTheDatabaseRefusesFailsAloneInItsGroup) {
  MakeContacts();
  if (b_->dialect() == Dialect::kSqlite) {
    Exec(*b_,
         "CREATE TRIGGER refuse_bad BEFORE INSERT ON contacts WHEN NEW.name = 'bad' "
         "BEGIN SELECT RAISE(ABORT, 'no bad names'); END");
  } else {
    Exec(*b_,
         "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
         "IF NEW.name = 'bad' THEN RAISE EXCEPTION 'no bad names'; END IF; RETURN NEW; END $$; "
         "CREATE TRIGGER refuse_bad BEFORE INSERT ON contacts FOR EACH ROW "
         "EXECUTE FUNCTION refuse_bad()");
  }
  InsertContacts(*a_, 600);
  Exec(*a_, "UPDATE contacts SET name = 'bad' WHERE id = 300");
  auto r = SyncAfterScans("SELECT 1", SyncDirection::kAToB);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->a_to_b.created, 599u);
  ASSERT_EQ(r->a_to_b.errors.size(), 1u);
  EXPECT_NE(r->a_to_b.errors[0].status.message().find("no bad names"), std::string_view::npos)
      << r->a_to_b.errors[0].status.ToString();
  auto rows = Dump(*b_, "contacts");
  ASSERT_EQ(rows.size(), 599u);
  EXPECT_EQ(rows[298][0], "v299");
  EXPECT_EQ(rows[299][0], "v301");
}

// A peer may send units whose ids differ but whose data names the same
// column. Given every other column but one, that row must be refused, not
// written with its values shifted into the wrong columns, and the rows
// saved with it must land.
TEST_P(SqlSyncTest, AColumnGivenTwiceIsRefusedAndTheRestOfTheBatchLands) {
  MakeContacts();
  auto rb = OpenReplica(url_b_);
  auto field = [](std::string_view name, std::string_view value) {
    return UnitData{ChangeUnitIdFromName(name), EncodeField(name, value)};
  };
  auto row = [&](int id, std::string name) {
    SaveRequest request{
        SaveAction::kCreate, ItemId(7, static_cast<uint64_t>(id)), nullptr, {}, {}, {}};
    request.units = {field("#table", "contacts"), field("id", "v" + std::to_string(id)),
                     field("name", "v" + name),   field("phone", "N"),
                     field("email", "N"),         field("score", "v1")};
    return request;
  };
  std::vector<SaveRequest> requests = {row(1, "Ann"), row(2, "Bob"), row(3, "Cy")};
  // Row 2: no score, and its name twice under another unit id.
  requests[1].units.pop_back();
  requests[1].units.push_back(UnitData{12345, EncodeField("name", "vshifted")});
  std::vector<Result<SaveResult>> results;
  rb->provider().SaveChanges(requests, results);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].ok()) << results[0].status().ToString();
  EXPECT_EQ(results[1].status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(results[2].ok()) << results[2].status().ToString();
  ASSERT_TRUE(rb->provider().CommitChanges().ok());
  auto rows = Dump(*b_, "contacts");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][1], "vAnn");
  EXPECT_EQ(rows[1][1], "vCy");
}

TEST_P(SqlSyncTest, ASyncDoesNotReadBackWhatItWroteButFindsWhatTheApplicationWrote) {
  MakeContacts();
  InsertContacts(*a_, 40);
  // On PostgreSQL, a transaction of someone else's that started before the
  // sync's and is still open holds the cluster's xmin back: the sync's rows
  // are not read back all the same.
  std::unique_ptr<Connection> other;
  if (b_->dialect() == Dialect::kPostgres) {
    auto connected = Connect(url_b_);
    ASSERT_TRUE(connected.ok()) << connected.status().ToString();
    other = *std::move(connected);
    Exec(*other, "CREATE TABLE unrelated(x integer); BEGIN; INSERT INTO unrelated VALUES (1)");
  }
  Sync();
  {
    // B's next scan has nothing to read: the 40 rows are the sync's own.
    auto rb = OpenReplica(url_b_);
    ASSERT_TRUE(rb->replica().DetectChanges().ok());
    EXPECT_EQ(rb->provider().rows_scanned(), 0u);
  }
  if (other) Exec(*other, "COMMIT");
  // An application write that lands after B's scan and before the sync's
  // writes is found by the next scan.
  Exec(*a_, "UPDATE contacts SET phone = 'from a' WHERE id <= 5");
  auto once =
      SyncAfterScans("UPDATE contacts SET email = 'from b' WHERE id = 20", SyncDirection::kAToB);
  ASSERT_TRUE(once.ok()) << once.status().ToString();
  EXPECT_EQ(once->a_to_b.updated, 5u);
  {
    auto rb = OpenReplica(url_b_);
    ASSERT_TRUE(rb->replica().DetectChanges().ok());
    EXPECT_EQ(rb->provider().rows_scanned(), 1u);  // the application's row alone
  }
  DbSyncReport r = Sync();
  EXPECT_EQ(r.b_to_a.updated, 1u);
  ExpectSame("contacts");
  EXPECT_EQ(Dump(*a_, "contacts")[19][3], "vfrom b");
}

// The sync's writes skip its own tracking triggers, but never the user's:
// an audit table (or a full-text index) kept by a trigger sees every row a
// sync writes, as it sees the application's.
TEST_P(SqlSyncTest, TheUsersOwnTriggersSeeTheSyncsWrites) {
  MakeContacts();
  if (b_->dialect() == Dialect::kSqlite) {
    Exec(*b_,
         "CREATE TABLE audit(op TEXT, id INTEGER); "
         "CREATE TRIGGER audit_insert AFTER INSERT ON contacts BEGIN "
         "INSERT INTO audit VALUES ('insert', NEW.id); END; "
         "CREATE TRIGGER audit_update AFTER UPDATE ON contacts BEGIN "
         "INSERT INTO audit VALUES ('update', NEW.id); END; "
         "CREATE TRIGGER audit_delete AFTER DELETE ON contacts BEGIN "
         "INSERT INTO audit VALUES ('delete', OLD.id); END");
  } else {
    Exec(*b_,
         "CREATE TABLE audit(op text, id bigint); "
         "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
         "INSERT INTO audit VALUES (lower(TG_OP), CASE WHEN TG_OP = 'DELETE' THEN OLD.id "
         "ELSE NEW.id END); RETURN NULL; END $$; "
         "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON contacts "
         "FOR EACH ROW EXECUTE FUNCTION audit()");
  }
  InsertContacts(*a_, 3);
  Sync();
  Exec(*a_, "UPDATE contacts SET phone = '2' WHERE id = 2; DELETE FROM contacts WHERE id = 3");
  Sync();
  ExpectSame("contacts");
  auto audit = Dump(*b_, "audit");
  std::multiset<std::pair<std::string, std::string>> seen;
  for (const auto& row : audit) seen.emplace(row[0], row[1]);
  std::multiset<std::pair<std::string, std::string>> expected = {{"vinsert", "v1"},
                                                                 {"vinsert", "v2"},
                                                                 {"vinsert", "v3"},
                                                                 {"vupdate", "v2"},
                                                                 {"vdelete", "v3"}};
  EXPECT_EQ(seen, expected);
  // The tracking triggers still skipped the sync's writes.
  auto rb = OpenReplica(url_b_);
  ASSERT_TRUE(rb->replica().DetectChanges().ok());
  EXPECT_EQ(rb->provider().rows_scanned(), 0u);
}

// On PostgreSQL other sessions write while a batch is open: the mark that
// hides the batch's own writes from the triggers must not hide theirs.
TEST_P(SqlSyncTest, AnApplicationWriteDuringABatchIsTracked) {
  if (b_->dialect() != Dialect::kPostgres) GTEST_SKIP() << "SQLite has one writer at a time";
  MakeContacts();
  auto field = [](std::string_view name, std::string_view value) {
    return UnitData{ChangeUnitIdFromName(name), EncodeField(name, value)};
  };
  {
    auto rb = OpenReplica(url_b_);
    std::vector<SaveRequest> requests(1);
    requests[0].action = SaveAction::kCreate;
    requests[0].id = RowItemId("contacts", std::vector<std::string>{"v1"});
    requests[0].units = {field("#table", "contacts"), field("id", "v1"),   field("name", "vone"),
                         field("phone", "N"),         field("email", "N"), field("score", "v1")};
    std::vector<Result<SaveResult>> results;
    rb->provider().SaveChanges(requests, results);
    ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
    // The batch is open; the application writes and commits meanwhile.
    Exec(*b_, "INSERT INTO contacts VALUES (2, 'two', NULL, NULL, 2)");
    ASSERT_TRUE(rb->provider().CommitChanges().ok());
    // The batch's own row was never tracked; the application's was.
    auto tracked = Dump(*b_, "meshsync_tracking_1");
    ASSERT_EQ(tracked.size(), 1u);
    EXPECT_EQ(tracked[0][0], "v2");
  }
  // The batch's metadata was never committed (the provider closed first):
  // the next sync compares B's rows and carries both to A.
  Sync();
  ExpectSame("contacts");
  EXPECT_EQ(Dump(*a_, "contacts").size(), 2u);
}

// A sync's writes are not tracked, so a crash after a batch is committed to
// the database and before its metadata is leaves rows that no tracking row
// names: a created, an updated and a deleted one. The next scan must find
// all three, compare every row, and carry them over as B's own changes.
TEST_P(SqlSyncTest, ACrashBetweenTheDataAndTheMetadataCommitLosesNothing) {
  MakeContacts();
  InsertContacts(*a_, 5);
  Sync();
  auto field = [](std::string_view name, std::string_view value) {
    return UnitData{ChangeUnitIdFromName(name), EncodeField(name, value)};
  };
  {
    auto rb = OpenReplica(url_b_);
    ItemId two = RowItemId("contacts", std::vector<std::string>{"v2"});
    ItemId three = RowItemId("contacts", std::vector<std::string>{"v3"});
    auto stored_two = rb->store().GetItem(two);
    auto stored_three = rb->store().GetItem(three);
    ASSERT_TRUE(stored_two.ok() && stored_two->has_value());
    ASSERT_TRUE(stored_three.ok() && stored_three->has_value());
    std::vector<SaveRequest> requests(3);
    requests[0].action = SaveAction::kCreate;
    requests[0].id = RowItemId("contacts", std::vector<std::string>{"v9"});
    requests[0].units = {field("#table", "contacts"), field("id", "v9"),   field("name", "vnine"),
                         field("phone", "N"),         field("email", "N"), field("score", "v9")};
    requests[1].action = SaveAction::kUpdate;
    requests[1].id = two;
    requests[1].local = &**stored_two;
    requests[1].units = {field("name", "vtwo, edited")};
    requests[2].action = SaveAction::kDelete;
    requests[2].id = three;
    requests[2].local = &**stored_three;
    std::vector<Result<SaveResult>> results;
    rb->provider().SaveChanges(requests, results);
    for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(rb->provider().CommitChanges().ok());
    // The process dies here: no metadata commit, no ChangesCommitted.
  }
  DbSyncReport r = Sync();
  EXPECT_EQ(r.b_to_a.created, 1u);
  EXPECT_EQ(r.b_to_a.updated, 1u);
  EXPECT_EQ(r.b_to_a.deleted, 1u);
  ExpectSame("contacts");
  auto rows = Dump(*a_, "contacts");
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[1][1], "vtwo, edited");
  EXPECT_EQ(rows[4][0], "v9");
  // Caught up: the next scan reads nothing again.
  auto rb = OpenReplica(url_b_);
  ASSERT_TRUE(rb->replica().DetectChanges().ok());
  EXPECT_EQ(rb->provider().rows_scanned(), 0u);
}

// A database provisioned before a sync's own writes went untracked gets the
// current triggers when it is next opened.
TEST_P(SqlSyncTest, TriggersOfAnEarlierVersionAreRemade) {
  MakeContacts();
  // B's tracking as an earlier version left it: a trigger that tracks every
  // insert, and no meshsync_applying.
  std::string old_trigger =
      b_->dialect() == Dialect::kSqlite
          ? "DROP TRIGGER meshsync_insert_1; "
            "CREATE TRIGGER meshsync_insert_1 AFTER INSERT ON contacts BEGIN "
            "INSERT INTO meshsync_tracking_1(id, seq, changed_millis, op) VALUES (NEW.id, "
            "(SELECT coalesce(max(seq), 0) + 1 FROM meshsync_tracking_1), 0, 'insert') "
            "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, op = excluded.op; END"
          : "CREATE OR REPLACE FUNCTION meshsync_track_1() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN INSERT INTO meshsync_tracking_1(id, xid, changed_millis, op) VALUES "
            "(NEW.id, pg_current_xact_id(), 0, 'insert') ON CONFLICT (id) DO UPDATE SET "
            "xid = excluded.xid, op = excluded.op; RETURN NULL; END $$";
  Exec(*b_, old_trigger +
                "; DROP TABLE meshsync_applying; DELETE FROM meshsync_scope WHERE name = "
                "'tracking'");
  InsertContacts(*a_, 10);
  Sync();
  ExpectSame("contacts");
  auto rb = OpenReplica(url_b_);
  ASSERT_TRUE(rb->replica().DetectChanges().ok());
  EXPECT_EQ(rb->provider().rows_scanned(), 0u);
  // And the application's writes are still tracked.
  Exec(*b_, "INSERT INTO contacts VALUES (11, 'n11', NULL, NULL, 11)");
  ASSERT_TRUE(rb->replica().DetectChanges().ok());
  EXPECT_EQ(rb->provider().rows_scanned(), 1u);
}

TEST_P(SqlSyncTest, InterruptedSyncResumesWithoutDuplicates) {
  MakeContacts();
  InsertContacts(*a_, 250);
  {
    auto ra = OpenReplica(url_a_);
    auto rb = OpenReplica(url_b_);
    SyncOptions options;
    options.batch_size = 100;
    int batches = 0;
    options.should_cancel = [&batches] { return ++batches > 1; };
    auto r = Synchronize(ra->replica(), rb->replica(), options);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->cancelled);
    EXPECT_EQ(Dump(*b_, "contacts").size(), 100u);
  }
  DbSyncOptions options;
  options.batch_size = 100;
  DbSyncReport r = Sync(options);
  EXPECT_EQ(r.a_to_b.created, 150u);  // the rest, and nothing twice
  ExpectSame("contacts");
  EXPECT_EQ(Dump(*b_, "contacts").size(), 250u);
}

TEST_P(SqlSyncTest, OneProcessSyncsAScopeAtATime) {
  MakeContacts();
  auto first = OpenReplica(url_a_);
  DatabaseOptions options;
  options.meta_dir = testing::TempDir() + "/meta";
  auto second = Database::Open(url_a_, options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("another meshsync"), std::string::npos);
  first.reset();
  EXPECT_TRUE(Database::Open(url_a_, options).ok());
}

TEST_P(SqlSyncTest, HostileNamesAndValuesAreDataNotSql) {
  std::string table = "Robert'); DROP TABLE x;--\"t";
  std::string column = "na\"me; DELETE FROM y";
  std::string qt = *QuoteIdent(table), qc = *QuoteIdent(column);
  for (Connection* db : {a_.get(), b_.get()}) {
    Exec(*db, "CREATE TABLE x(k integer PRIMARY KEY)");
    Exec(*db, "CREATE TABLE " + qt + "(id integer PRIMARY KEY, " + qc + " text)");
    std::vector<std::string> t = {table};
    Status s = Provision(*db, t);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  Exec(*a_, "INSERT INTO " + qt + " VALUES (1, 'it''s \"quoted\"; DROP TABLE x; --')");
  Sync();
  auto rows = Dump(*b_, table);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][1], "vit's \"quoted\"; DROP TABLE x; --");
  EXPECT_TRUE(Dump(*b_, "x").empty());  // still there, untouched
}

TEST_P(SqlSyncTest, TablesThatCannotSyncAreRefusedBeforeAnythingIsWritten) {
  Exec(*a_, "CREATE TABLE nokey(a integer, b text)");
  std::vector<std::string> nokey = {"nokey"};
  Status s = Provision(*a_, nokey);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no primary key"), std::string::npos);
  std::vector<std::string> missing = {"missing"};
  EXPECT_EQ(Provision(*a_, missing).code(), StatusCode::kNotFound);
  std::vector<std::string> own = {"meshsync_tables"};
  EXPECT_EQ(Provision(*a_, own).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ListEnrolled(*a_)->size(), 0u);  // nothing provisioned

  // Schemas that differ between the replicas: a clear error, nothing written.
  Exec(*a_, "CREATE TABLE t(id integer PRIMARY KEY, v text, extra text)");
  Exec(*b_, "CREATE TABLE t(id integer PRIMARY KEY, v integer)");
  std::vector<std::string> t = {"t"};
  ASSERT_TRUE(Provision(*a_, t).ok());
  ASSERT_TRUE(Provision(*b_, t).ok());
  Exec(*a_, "INSERT INTO t VALUES (1, 'x', 'y')");
  auto r = SyncUrls(url_a_, url_b_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("column extra is only in"), std::string::npos);
  EXPECT_NE(r.status().message().find("column v is"), std::string::npos);
  EXPECT_TRUE(Dump(*b_, "t").empty());
}

TEST_P(SqlSyncTest, SchemaChangedAfterProvisioningIsACleanError) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', '111', NULL, 1)");
  Sync();
  Exec(*b_, "ALTER TABLE contacts ADD COLUMN nickname text");
  Exec(*a_, "UPDATE contacts SET name = 'Anne' WHERE id = 1");
  auto r = SyncUrls(url_a_, url_b_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("changed since it was provisioned"), std::string::npos);
  EXPECT_EQ(Dump(*b_, "contacts")[0][1], "vAnn");  // nothing written
  // The same change on both sides and a new provisioning: syncing resumes.
  Exec(*a_, "ALTER TABLE contacts ADD COLUMN nickname text");
  std::vector<std::string> t = {"contacts"};
  ASSERT_TRUE(Provision(*a_, t).ok());
  ASSERT_TRUE(Provision(*b_, t).ok());
  Sync();
  ExpectSame("contacts");
  EXPECT_EQ(Dump(*b_, "contacts")[0][1], "vAnne");
}

TEST_P(SqlSyncTest, DeprovisionLeavesTheTablesAndRemovesTheTracking) {
  MakeContacts();
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', '111', NULL, 1)");
  ASSERT_TRUE(Deprovision(*a_, {}).ok());
  EXPECT_EQ(Dump(*a_, "contacts").size(), 1u);
  EXPECT_TRUE(ListEnrolled(*a_)->empty());
  // No trigger is left behind: writes work and leave no tracking.
  Exec(*a_, "UPDATE contacts SET name = 'x' WHERE id = 1");
  EXPECT_EQ(DatabaseId(*a_).status().code(), StatusCode::kFailedPrecondition);
  std::string list = a_->dialect() == Dialect::kSqlite
                         ? "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'meshsync%'"
                         : "SELECT count(*) FROM pg_class WHERE relname LIKE 'meshsync%'";
  EXPECT_EQ(QueryValue(*a_, list)->value_or(""), "v0");
}

TEST_P(SqlSyncTest, DeprovisioningOneTableLeavesTheOthersTracked) {
  MakeContacts();
  Exec(*a_, "CREATE TABLE other(id integer PRIMARY KEY, v text)");
  Exec(*b_, "CREATE TABLE other(id integer PRIMARY KEY, v text)");
  std::vector<std::string> other = {"other"};
  ASSERT_TRUE(Provision(*a_, other).ok());
  ASSERT_TRUE(Provision(*b_, other).ok());
  // Named twice, it is still one table: the other one stays enrolled.
  std::vector<std::string> twice = {"other", "other"};
  ASSERT_TRUE(Deprovision(*a_, twice).ok());
  ASSERT_TRUE(Deprovision(*b_, twice).ok());
  ASSERT_EQ(ListEnrolled(*a_)->size(), 1u);
  EXPECT_EQ((*ListEnrolled(*a_))[0].name, "contacts");
  Exec(*a_, "INSERT INTO contacts VALUES (1, 'Ann', NULL, NULL, 1)");
  Sync();
  ExpectSame("contacts");
  EXPECT_EQ(Dump(*b_, "contacts").size(), 1u);
}

TEST(SqlKeyTest, KeysReadFromMetadataNeverThrow) {
  EXPECT_EQ(TableProvider::DescribeKey("t%7Cx|v1|v%25"), "t|x (1, %)");
  // A malformed escape is kept as it is.
  EXPECT_EQ(TableProvider::DescribeKey("t|v%ZZ|v%4"), "t (%ZZ, %4)");
  EXPECT_EQ(TableProvider::DescribeKey(""), " ()");
}

TEST(SqlKeyTest, RowIdsOfIntegerKeysFollowTheKeysOrder) {
  auto id = [](std::string_view table, std::string key) {
    std::vector<std::string> pk = {std::move(key)};
    return RowItemId(table, pk);
  };
  std::vector<ItemId> ids = {id("t", "v-9223372036854775808"),
                             id("t", "v-5"),
                             id("t", "v0"),
                             id("t", "v2"),
                             id("t", "v10"),
                             id("t", "v9223372036854775807")};
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
  EXPECT_EQ(id("t", "v2").hi, id("t", "v3").hi);  // one table, one high half
  EXPECT_NE(id("t", "v2").hi, id("u", "v2").hi);
  // Only the canonical form: "007", text that looks like a number, is
  // another key than 7, and NULL or a blob is no integer.
  EXPECT_NE(id("t", "v007"), id("t", "v7"));
  EXPECT_NE(id("t", "v007").hi, id("t", "v7").hi);
  EXPECT_NE(id("t", "b7").hi, id("t", "v7").hi);
  EXPECT_NE(id("t", "N").hi, id("t", "v7").hi);
  // A key of several columns is hashed.
  std::vector<std::string> two = {"v1", "v2"};
  EXPECT_NE(RowItemId("t", two).hi, id("t", "v1").hi);
}

std::string AllTypesDdl(Dialect d) {
  return d == Dialect::kSqlite
             ? "CREATE TABLE typed(id INTEGER PRIMARY KEY, i16 SMALLINT, i64 BIGINT, n NUMERIC, "
               "f4 REAL, f8 DOUBLE PRECISION, t TEXT, vc VARCHAR(20), bin BLOB, flag BOOLEAN, "
               "day DATE, at TIMESTAMP, atz TIMESTAMPTZ, u UUID, j JSON, jb JSONB)"
             : "CREATE TABLE typed(id integer PRIMARY KEY, i16 smallint, i64 bigint, n numeric, "
               "f4 real, f8 double precision, t text, vc varchar(20), bin bytea, flag boolean, "
               "day date, at timestamp, atz timestamptz, u uuid, j json, jb jsonb)";
}

TEST_P(SqlSyncTest, EveryTypeRoundTripsExactly) {
  Exec(*a_, AllTypesDdl(a_->dialect()));
  Exec(*b_, AllTypesDdl(b_->dialect()));
  std::vector<std::string> t = {"typed"};
  ASSERT_TRUE(Provision(*a_, t).ok());
  ASSERT_TRUE(Provision(*b_, t).ok());
  bool a_pg = a_->dialect() == Dialect::kPostgres;
  std::string bytes = a_pg ? "'\\x00ff10'::bytea" : "x'00ff10'";
  Exec(*a_,
       "INSERT INTO typed VALUES (1, -32768, 9223372036854775807, 1.5, 0.25, "
       "0.30000000000000004, 'naïve ''quote'' \"dq\"\n tab\t', 'short', " +
           bytes + ", " + (a_pg ? "true" : "1") +
           ", '2024-02-29', '2024-01-02 03:04:05.123456', "
           "'2024-01-02 03:04:05.5+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
           "'{\"a\": [1, 2]}', '{\"b\": 1}')");
  Exec(*a_, "INSERT INTO typed(id) VALUES (2)");  // NULL everywhere
  Sync();
  auto rows_a = Dump(*a_, "typed");
  auto rows_b = Dump(*b_, "typed");
  EXPECT_EQ(rows_a, rows_b);
  ASSERT_EQ(rows_b.size(), 2u);
  const auto& r = rows_b[0];
  EXPECT_EQ(r[1], "v-32768");
  EXPECT_EQ(r[2], "v9223372036854775807");
  EXPECT_EQ(r[3], "v1.5");
  EXPECT_EQ(r[4], "v0.25");
  EXPECT_EQ(r[5], "v0.30000000000000004");
  EXPECT_EQ(r[6], "vnaïve 'quote' \"dq\"\n tab\t");
  EXPECT_EQ(r[8], std::string("b\x00\xff\x10", 4));
  EXPECT_EQ(r[9], "v1");
  EXPECT_EQ(r[10], "v2024-02-29");
  EXPECT_EQ(r[11], "v2024-01-02 03:04:05.123456");
  EXPECT_EQ(r[13], "va0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  for (size_t c = 1; c < rows_b[1].size(); ++c) EXPECT_EQ(rows_b[1][c], "N");
  // Another sync finds nothing to do: no value ping-pongs between the two.
  DbSyncReport again = Sync();
  EXPECT_EQ(again.a_to_b.updated + again.b_to_a.updated, 0u);
}

TEST_P(SqlSyncTest, ValuesADatabaseNormalisesConvergeEverywhere) {
  // A timestamp written in another spelling: where it is a real timestamp
  // (PostgreSQL) the database rewrites it, and that form spreads.
  Exec(*a_, "CREATE TABLE ev(id integer PRIMARY KEY, atz timestamptz, n numeric)");
  Exec(*b_, "CREATE TABLE ev(id integer PRIMARY KEY, atz timestamptz, n numeric)");
  std::vector<std::string> t = {"ev"};
  ASSERT_TRUE(Provision(*a_, t).ok());
  ASSERT_TRUE(Provision(*b_, t).ok());
  Exec(*a_, "INSERT INTO ev VALUES (1, '2024-01-02T04:04:05+01:00', '2.50')");
  DbSyncReport r = Sync();
  ExpectSame("ev");
  EXPECT_LE(r.rounds, 3);
  DbSyncReport again = Sync();
  EXPECT_EQ(again.a_to_b.updated + again.b_to_a.updated, 0u);
  EXPECT_EQ(again.rounds, 1);
}

TEST_P(SqlSyncTest, IncompatibleTypesAreNamed) {
  Exec(*a_, "CREATE TABLE odd(id integer PRIMARY KEY, p " +
                std::string(a_->dialect() == Dialect::kPostgres ? "point" : "GEOMETRY") + ")");
  std::vector<std::string> t = {"odd"};
  Status s = Provision(*a_, t);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("type cannot sync: p"), std::string::npos) << s.ToString();
}

// libpq is loaded with the first PostgreSQL connection (connection.cc): a
// process that only uses SQLite, as the daemon and folder syncs are, does not
// map it and the libraries it brings.
TEST(SqlConnection, LibpqIsLoadedWithTheFirstPostgresConnection) {
  auto mapped = [] {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      if (line.find("/libpq.so") != std::string::npos) return true;
    }
    return false;
  };
  auto lite = Open(NewDatabase("sqlite"));
  ASSERT_NE(lite, nullptr);
  ASSERT_TRUE(lite->Exec("CREATE TABLE t(id INTEGER PRIMARY KEY)").ok());
  EXPECT_FALSE(mapped());
  auto pg = Open(NewDatabase("postgres"));
  ASSERT_NE(pg, nullptr);
  EXPECT_TRUE(mapped());
  EXPECT_TRUE(pg->Exec("CREATE TABLE t(id bigint PRIMARY KEY)").ok());
}

// SQLite's meshsync_field_hash, which a sync's UPDATE checks the row with
// (TableProvider::Update), hashes a value as the provider hashes it
// read back through Query: of every storage class. Were they to differ, every
// update would take the slow way (read the row, then update it).
TEST(SqlConnection, TheFieldHashFunctionHashesValuesAsQueryReadsThem) {
  auto lite = Open(NewDatabase("sqlite"));
  ASSERT_NE(lite, nullptr);
  ASSERT_TRUE(lite->HashesFields());
  ASSERT_TRUE(lite->Exec("CREATE TABLE t(v); INSERT INTO t VALUES (NULL), (-7), (2.5), "
                         "(1e300), ('text'), (''), (x'00ff'), (x'')")
                  .ok());
  std::vector<std::pair<std::string, std::string>> rows;  // value, hash
  ASSERT_TRUE(lite->Query("SELECT v, meshsync_field_hash('col', v) FROM t", {},
                          [&](Row r) {
                            rows.emplace_back(r[0], r[1]);
                            return Status::Ok();
                          })
                  .ok());
  ASSERT_EQ(rows.size(), 8u);
  for (const auto& [value, hash] : rows) {
    EXPECT_EQ(hash, "v" + std::to_string(static_cast<int64_t>(FieldHashOf("col", value)))) << value;
  }
}

INSTANTIATE_TEST_SUITE_P(Pairs, SqlSyncTest,
                         ::testing::Values(Pair{"sqlite", "sqlite"}, Pair{"sqlite", "postgres"},
                                           Pair{"postgres", "postgres"}),
                         [](const ::testing::TestParamInfo<Pair>& param) {
                           return param.param.a + "_" + param.param.b;
                         });

}  // namespace
}  // namespace meshsync::sql
