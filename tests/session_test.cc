// Session behaviour that scenario files cannot express: callbacks and
// refusals.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <functional>
#include <map>
#include <string>
#include <utility>

#include "testing/scratch_dir.h"
#include "testing/test_replica.h"

namespace meshsync {
namespace {

using testing::FakeClock;
using testing::ScratchDir;
using testing::SeededRandom;
using testing::TestReplica;

TEST(SessionTest, ReportsProgressAfterEveryBatchUpToTheTotal) {
  auto a = TestReplica::Make(1);
  auto b = TestReplica::Make(2);
  ASSERT_TRUE(a.ok() && b.ok());
  for (uint64_t n = 0; n < 10; ++n) (*a)->provider.Put(ItemId(0, n + 1), "name", "record");
  std::vector<SyncProgress> seen;
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  options.batch_size = 3;
  options.on_progress = [&seen](const SyncProgress& progress) { seen.push_back(progress); };
  auto report = Synchronize(*(*a)->replica, *(*b)->replica, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(seen.size(), 4u);  // 3 + 3 + 3 + 1
  for (size_t idx = 1; idx < seen.size(); ++idx) {
    EXPECT_GT(seen[idx].items_done, seen[idx - 1].items_done);
    EXPECT_GE(seen[idx].bytes_done, seen[idx - 1].bytes_done);
  }
  EXPECT_EQ(seen.back().items_done, 10u);
  EXPECT_EQ(seen.back().items_total, 10u);
  EXPECT_EQ(seen.back().bytes_done, report->a_to_b.bytes);
  EXPECT_GT(report->a_to_b.bytes, 0u);
  EXPECT_TRUE(seen.back().a_to_b);
}

TEST(SessionTest, RefusesToSyncAReplicaWithItself) {
  auto a = TestReplica::Make(1);
  ASSERT_TRUE(a.ok());
  auto report = Synchronize(*(*a)->replica, *(*a)->replica);
  EXPECT_EQ(report.status().code(), StatusCode::kInvalidArgument);
}

TEST(SessionTest, ReplicaRefusesMetadataOfAnotherProvider) {
  auto store = OpenMemoryStore(ReplicaId(Id128{1, 2}), "some-other-provider");
  RecordProvider provider;
  auto replica = Replica::Open(*store, provider);
  EXPECT_EQ(replica.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(replica.status().message().find("some-other-provider"), std::string_view::npos);
}

TEST(SessionTest, CancelledBeforeTheFirstBatchAppliesNothing) {
  auto a = TestReplica::Make(1);
  auto b = TestReplica::Make(2);
  ASSERT_TRUE(a.ok() && b.ok());
  (*a)->provider.Put(ItemId(0, 1), "name", "record");
  SyncOptions options;
  options.should_cancel = [] { return true; };
  auto report = Synchronize(*(*a)->replica, *(*b)->replica, options);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->cancelled);
  EXPECT_TRUE((*b)->provider.records().empty());
  EXPECT_TRUE((*b)->replica->state().knowledge.IsEmpty());
}

TEST(SessionTest, ASmallSourceDoesNotReadALargeDestinationWholesale) {
  auto small = TestReplica::Make(1);
  auto large = TestReplica::Make(2);
  ASSERT_TRUE(small.ok() && large.ok());
  for (uint64_t n = 0; n < 2000; ++n) (*large)->provider.Put(ItemId(1, n), "name", "mine");
  for (uint64_t n = 0; n < 3; ++n) (*small)->provider.Put(ItemId(2, n), "name", "theirs");
  ASSERT_TRUE((*small)->replica->DetectChanges().ok());
  ASSERT_TRUE((*large)->replica->DetectChanges().ok());
  size_t scanned_before = (*large)->store->items_scanned();
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  options.detect_changes = false;
  auto report = Synchronize(*(*small)->replica, *(*large)->replica, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->a_to_b.created, 3u);
  // Memory and reads stay proportional to the batch, not to the destination.
  EXPECT_LT((*large)->store->items_scanned() - scanned_before, 100u);
}

// A few changes among many items the destination has are one batch: the
// source sends only what the destination lacks, however far apart, and
// what the destination learns covers the whole range examined.
TEST(SessionTest, FewChangesAmongManyItemsAreOneBatch) {
  auto a = TestReplica::Make(1);
  auto b = TestReplica::Make(2);
  ASSERT_TRUE(a.ok() && b.ok());
  for (uint64_t n = 0; n < 5000; ++n) (*a)->provider.Put(ItemId(0, n + 1), "name", "v1");
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  options.batch_size = 100;
  auto first = Synchronize(*(*a)->replica, *(*b)->replica, options);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->a_to_b.created, 5000u);
  EXPECT_GE(first->a_to_b.batches, 50u);
  for (uint64_t n : {7u, 2500u, 4999u}) (*a)->provider.Put(ItemId(0, n), "name", "v2");
  std::vector<SyncProgress> seen;
  options.on_progress = [&seen](const SyncProgress& progress) { seen.push_back(progress); };
  auto second = Synchronize(*(*a)->replica, *(*b)->replica, options);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->a_to_b.updated, 3u);
  EXPECT_EQ(second->a_to_b.batches, 1u);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().items_done, 5000u);  // every item examined, at the source
  // Nothing is left to send: the destination learned the whole range.
  auto third = Synchronize(*(*a)->replica, *(*b)->replica, options);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->a_to_b.batches, 0u);
  EXPECT_EQ((*b)->provider.records().at(ItemId(0, 2500)).at("name"), "v2");
}

// A provider whose one detection pass records an item under many keys in
// turn (a file renamed again and again while it is scanned), and looks the
// item up while the pass is still under way.
class RenamingProvider final : public Provider {
 public:
  static constexpr int kKeys = 70'000;  // its lookup table fills with erased slots, often

  std::string_view Name() const override { return "renaming"; }
  Status DetectChanges(ChangeRecorder& recorder) override {
    const ChangeUnitId unit = ChangeUnitIdFromName("name");
    LocalChange other{ItemId(0, 2), false, {unit}, "other", ""};
    MESHSYNC_RETURN_IF_ERROR(recorder.Record(std::move(other)).status());
    for (int n = 0; n < kKeys; ++n) {
      LocalChange change{ItemId(0, 1), false, {unit}, "k" + std::to_string(n), ""};
      MESHSYNC_RETURN_IF_ERROR(recorder.Record(std::move(change)).status());
    }
    for (const std::string& key : {std::string("k0"), std::string("k5"),
                                   "k" + std::to_string(kKeys - 1), std::string("other")}) {
      MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, recorder.FindByKey(key));
      found[key] = item ? item->id.ToHex() : "none";
    }
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, recorder.FindItem(ItemId(0, 1)));
    last_key = item ? item->key : "none";
    return Status::Ok();
  }
  Status LoadChangeData(const ItemMetadata&, std::span<const ChangeUnitId>,
                        std::vector<UnitData>&) override {
    return FailedPreconditionError("not synced");
  }
  Result<SaveResult> SaveChange(const SaveRequest&) override {
    return FailedPreconditionError("not synced");
  }

  std::map<std::string, std::string> found;  // by key: the id found, or "none"
  std::string last_key;
};

TEST(ReplicaTest, ARecordingPassFindsAnItemUnderTheLastKeyItWasRecordedUnder) {
  SeededRandom random(5);
  FakeClock clock;
  RenamingProvider provider;
  auto store = OpenMemoryStore(ReplicaId(Id128{1, 1}), std::string(provider.Name()));
  auto replica = Replica::Open(*store, provider, clock, random);
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  ASSERT_TRUE((*replica)->DetectChanges().ok());
  const std::string last = "k" + std::to_string(RenamingProvider::kKeys - 1);
  EXPECT_EQ(provider.found["k0"], "none");
  EXPECT_EQ(provider.found["k5"], "none");
  EXPECT_EQ(provider.found[last], ItemId(0, 1).ToHex());
  EXPECT_EQ(provider.found["other"], ItemId(0, 2).ToHex());
  EXPECT_EQ(provider.last_key, last);
  // And so it is committed.
  auto stored = store->FindByKey(last);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->id, ItemId(0, 1));
  auto old = store->FindByKey("k0");
  ASSERT_TRUE(old.ok());
  EXPECT_FALSE(old->has_value());
}

// A record provider that looks at what a second view of a SQLite store file
// (its own replica's, or its session's source's) holds on disk when it hears
// that changes are recorded (ChangesRecorded: a provider that reads a change
// feed moves its anchor then), and when it commits a session's changes.
class WatchingProvider final : public Provider {
 public:
  explicit WatchingProvider(std::string watched) : watched_(std::move(watched)) {}

  RecordProvider& records() { return records_; }
  // The store's tick on disk at each call: its last commit's.
  const std::vector<Tick>& at_recorded() const { return at_recorded_; }
  const std::vector<Tick>& at_commit() const { return at_commit_; }
  // Runs once, before the next change is saved.
  void BeforeNextSave(std::function<void()> fn) { before_save_ = std::move(fn); }

  std::string_view Name() const override { return records_.Name(); }
  Status DetectChanges(ChangeRecorder& recorder) override {
    return records_.DetectChanges(recorder);
  }
  Status ChangesRecorded() override { return Look(at_recorded_); }
  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override {
    return records_.LoadChangeData(item, units, out);
  }
  Result<SaveResult> SaveChange(const SaveRequest& request) override {
    if (before_save_) std::exchange(before_save_, nullptr)();
    return records_.SaveChange(request);
  }
  Status CommitChanges() override {
    if (!fail_commit_.ok() && commits_to_pass_-- == 0) {
      return std::exchange(fail_commit_, Status::Ok());
    }
    return Look(at_commit_);
  }
  bool CommitsInBackground() const override { return in_background_; }
  // The next CommitChanges fails with `status`, as a full disk would; or
  // the one after `pass` more.
  void FailNextCommit(Status status, int pass = 0) {
    fail_commit_ = std::move(status);
    commits_to_pass_ = pass;
  }
  void CommitInBackground() { in_background_ = true; }

 private:
  Status Look(std::vector<Tick>& seen) {
    MESHSYNC_ASSIGN_OR_RETURN(auto on_disk, OpenSqliteSnapshot(watched_, Name()));
    seen.push_back(on_disk->state().tick);
    return Status::Ok();
  }

  std::string watched_;
  RecordProvider records_;
  std::vector<Tick> at_recorded_, at_commit_;
  std::function<void()> before_save_;
  Status fail_commit_;
  int commits_to_pass_ = 0;
  bool in_background_ = false;
};

// Replica `a` on a SQLite store at `path`, `b` in memory, each with a
// WatchingProvider that watches `path`.
struct WatchedPair {
  explicit WatchedPair(const std::string& store_path)
      : path(store_path), provider_a(store_path), provider_b(store_path) {}

  void Open() {
    auto store = OpenSqliteStore(path, RecordProvider::kName, random);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_a = std::move(*store);
    auto replica = Replica::Open(*store_a, provider_a, clock, random);
    ASSERT_TRUE(replica.ok()) << replica.status().ToString();
    a = std::move(*replica);
    store_b = OpenMemoryStore(ReplicaId(Id128{2, 2}), std::string(RecordProvider::kName));
    replica = Replica::Open(*store_b, provider_b, clock, random);
    ASSERT_TRUE(replica.ok()) << replica.status().ToString();
    b = std::move(*replica);
  }

  std::string path;
  SeededRandom random{3};
  FakeClock clock;
  WatchingProvider provider_a, provider_b;
  std::unique_ptr<MetadataStore> store_a, store_b;
  std::unique_ptr<Replica> a, b;
};

// A session starts while its source's detected changes are still being
// committed (StartDetectChanges): it reads and applies them, but the
// destination commits them only once they are durable at the source. Here
// another connection holds the source store's write lock until the
// destination saves its first change, so the source's commit cannot have
// ended before that; it waits for the lock, and for SQLite's busy retry.
TEST(SessionTest, ADestinationCommitsOnlyWhatIsDurableAtTheSource) {
  ScratchDir dir("durable");
  ASSERT_FALSE(dir.path().empty());
  WatchedPair pair((dir.path() / "a.db").string());
  ASSERT_NO_FATAL_FAILURE(pair.Open());
  for (uint64_t n = 0; n < 300; ++n) pair.provider_a.records().Put(ItemId(0, n), "name", "v1");
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  auto report = Synchronize(*pair.a, *pair.b, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->a_to_b.created, 300u);

  for (uint64_t n = 0; n < 300; n += 6) pair.provider_a.records().Put(ItemId(0, n), "name", "v2");
  sqlite3* lock = nullptr;
  ASSERT_EQ(sqlite3_open(pair.path.c_str(), &lock), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(lock, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  pair.provider_b.BeforeNextSave(
      [lock] { sqlite3_exec(lock, "ROLLBACK", nullptr, nullptr, nullptr); });
  ASSERT_TRUE(pair.a->StartDetectChanges().ok());
  const Tick detected = pair.a->state().tick;
  options.detect_changes = false;
  report = Synchronize(*pair.a, *pair.b, options);
  sqlite3_close(lock);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->a_to_b.updated, 50u);
  ASSERT_EQ(pair.provider_b.at_commit().size(), 2u);  // the first session's and this one's
  EXPECT_EQ(pair.provider_b.at_commit().back(), detected);
  EXPECT_EQ(pair.provider_a.at_recorded().back(), detected);
}

// Syncs 50 items from A to a SQLite-backed B in windows of `batch_size`,
// with B's data commit failing after `pass` good ones: the session fails
// with the commit's error, and B's reopened store holds `kept` items (the
// windows committed before) and nothing of the failed one. The next session
// converges. (The record provider kept the rows it saved, as a crash after
// the data reached the disk would: the next session finds them, equal.)
void SyncThroughAFailedDataCommit(bool in_background, size_t batch_size, int pass, uint64_t kept) {
  ScratchDir dir("failed_commit");
  ASSERT_FALSE(dir.path().empty());
  std::string path = (dir.path() / "b.db").string();
  auto a = TestReplica::Make(1);
  ASSERT_TRUE(a.ok());
  for (uint64_t n = 0; n < 50; ++n) (*a)->provider.Put(ItemId(0, n), "name", "v1");
  SeededRandom random(4);
  FakeClock clock;
  WatchingProvider provider_b(path);
  if (in_background) provider_b.CommitInBackground();
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  options.batch_size = batch_size;
  {
    auto store_b = OpenSqliteStore(path, RecordProvider::kName, random);
    ASSERT_TRUE(store_b.ok()) << store_b.status().ToString();
    auto b = Replica::Open(**store_b, provider_b, clock, random);
    ASSERT_TRUE(b.ok());
    provider_b.FailNextCommit(UnavailableError("no space left on device"), pass);
    auto report = Synchronize(*(*a)->replica, **b, options);
    EXPECT_EQ(report.status().code(), StatusCode::kUnavailable);
    EXPECT_EQ(provider_b.at_commit().size(), static_cast<size_t>(pass));
  }
  auto store_b = OpenSqliteStore(path, RecordProvider::kName, random);
  ASSERT_TRUE(store_b.ok()) << store_b.status().ToString();
  EXPECT_EQ(*(*store_b)->CountItems(), kept);
  EXPECT_EQ((*store_b)->state().knowledge.IsEmpty(), kept == 0);
  auto b = Replica::Open(**store_b, provider_b, clock, random);
  ASSERT_TRUE(b.ok());
  auto report = Synchronize(*(*a)->replica, **b, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(*(*store_b)->CountItems(), 50u);
  EXPECT_EQ(provider_b.records().records(), (*a)->provider.records());
}

// A provider that would commit in the background, over a store that does not
// show a staged batch to reads (the memory store): each window's data is
// committed before the next is decided, so what the destination knows
// takes in every window.
TEST(SessionTest, AStoreThatHidesStagedBatchesGetsItsWindowsOneByOne) {
  ScratchDir dir("hidden_staging");
  ASSERT_FALSE(dir.path().empty());
  WatchedPair pair((dir.path() / "a.db").string());
  ASSERT_NO_FATAL_FAILURE(pair.Open());
  ASSERT_FALSE(pair.store_b->ShowsStaged());
  pair.provider_b.CommitInBackground();
  for (uint64_t n = 0; n < 50; ++n) pair.provider_a.records().Put(ItemId(0, n), "name", "v1");
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  options.batch_size = 10;
  auto first = Synchronize(*pair.a, *pair.b, options);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->a_to_b.created, 50u);
  for (uint64_t n = 0; n < 50; ++n) {
    auto item = pair.store_b->GetItem(ItemId(0, n));
    ASSERT_TRUE(item.ok() && item->has_value());
    EXPECT_TRUE(KnowsAllOf(pair.store_b->state().knowledge, **item)) << "item " << n;
  }
  auto second = Synchronize(*pair.a, *pair.b, options);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->a_to_b.batches, 0u);
}

// The destination's metadata for a window is written while its provider
// commits the data, but when that commit fails, none of it is committed.
TEST(SessionTest, AFailedDataCommitLeavesNoMetadata) {
  SyncThroughAFailedDataCommit(/*in_background=*/false, 1000, /*pass=*/0, /*kept=*/0);
}

// A provider that commits a window's data while the session reads the next
// one: when a commit fails, the windows before it are kept, and nothing of
// it.
TEST(SessionTest, AFailedBackgroundDataCommitKeepsTheWindowsBeforeIt) {
  SyncThroughAFailedDataCommit(/*in_background=*/true, 10, /*pass=*/2, /*kept=*/20);
}

// The whole of DetectChanges tells the provider only once its changes are
// on disk, with a pass whose last part is written in the background for
// far longer than a look at the file takes.
TEST(SessionTest, DetectChangesAnnouncesOnlyWhatIsOnDisk) {
  ScratchDir dir("announce");
  ASSERT_FALSE(dir.path().empty());
  WatchedPair pair((dir.path() / "a.db").string());
  ASSERT_NO_FATAL_FAILURE(pair.Open());
  constexpr size_t kItems = 19'999;  // the last 9,999 in a batch of their own
  for (uint64_t n = 0; n < kItems; ++n) pair.provider_a.records().Put(ItemId(0, n), "name", "v1");
  ASSERT_TRUE(pair.a->DetectChanges().ok());
  EXPECT_EQ(pair.provider_a.at_recorded(), std::vector<Tick>{pair.a->state().tick});
  ASSERT_TRUE(pair.a->FinishDetection().ok());  // nothing waits: no second call
  EXPECT_EQ(pair.provider_a.at_recorded().size(), 1u);
}

// The default ScanChanges: only what `known` lacks, at most `limit`, and
// how far it looked.
TEST(MetadataStoreTest, ScanChangesSaysHowFarItLooked) {
  auto a = TestReplica::Make(1);
  ASSERT_TRUE(a.ok());
  for (uint64_t n = 0; n < 10; ++n) (*a)->provider.Put(ItemId(0, n + 1), "name", "v1");
  ASSERT_TRUE((*a)->replica->DetectChanges().ok());
  Knowledge known = (*a)->replica->state().knowledge;
  for (uint64_t n : {3u, 6u, 9u}) (*a)->provider.Put(ItemId(0, n), "name", "v2");
  ASSERT_TRUE((*a)->replica->DetectChanges().ok());
  MetadataStore& store = *(*a)->store;
  std::vector<ItemMetadata> out;
  MetadataStore::ChangeScan scan;
  ASSERT_TRUE(store.ScanChanges(ItemId::Min(), known, 2, out, scan).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].id, ItemId(0, 3));
  EXPECT_EQ(out[1].id, ItemId(0, 6));
  EXPECT_EQ(scan.through, ItemId(0, 6));
  EXPECT_EQ(scan.examined, 6u);
  out.clear();
  ASSERT_TRUE(store.ScanChanges(scan.through.Next(), known, 2, out, scan).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].id, ItemId(0, 9));
  EXPECT_EQ(scan.through, ItemId::Max());
  EXPECT_EQ(scan.examined, 4u);
  out.clear();
  ASSERT_TRUE(
      store.ScanChanges(ItemId::Min(), (*a)->replica->state().knowledge, 2, out, scan).ok());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(scan.through, ItemId::Max());
  EXPECT_EQ(scan.examined, 10u);
}

}  // namespace
}  // namespace meshsync

namespace meshsync {
namespace {

// Sessions summed into one report (several rounds of a folder or database
// sync): every counter adds up, errors stay the caller's to keep.
TEST(DirectionReportTest, AddSumsEveryCounter) {
  DirectionReport sum;
  sum.created = 1;
  sum.errors.push_back(ItemError{ItemId(1, 1), UnavailableError("busy")});
  DirectionReport round;
  round.created = 2;
  round.updated = 3;
  round.deleted = 4;
  round.conflicts = 5;
  round.deferred = 6;
  round.conflict_copies = 7;
  round.local_versions = 8;
  round.skipped = 9;
  round.bytes = 10;
  round.batches = 11;
  round.recovery = true;
  round.errors.push_back(ItemError{ItemId(2, 2), UnavailableError("busy")});
  sum.Add(round);
  sum.Add(DirectionReport{});
  EXPECT_EQ(sum.created, 3u);
  EXPECT_EQ(sum.updated, 3u);
  EXPECT_EQ(sum.deleted, 4u);
  EXPECT_EQ(sum.conflicts, 5u);
  EXPECT_EQ(sum.deferred, 6u);
  EXPECT_EQ(sum.conflict_copies, 7u);
  EXPECT_EQ(sum.local_versions, 8u);
  EXPECT_EQ(sum.skipped, 9u);
  EXPECT_EQ(sum.bytes, 10u);
  EXPECT_EQ(sum.batches, 11u);
  EXPECT_TRUE(sum.recovery);
  EXPECT_EQ(sum.errors.size(), 1u);
}

}  // namespace
}  // namespace meshsync
