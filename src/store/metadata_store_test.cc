#include "meshsync/metadata_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string_view>

#include "src/store/fingerprint_set.h"
#include "testing/fakes.h"

namespace meshsync {
namespace {

namespace fs = std::filesystem;

ItemMetadata Item(uint64_t n, std::string key, Tick tick) {
  ItemMetadata item;
  item.id = ItemId(0, n);
  item.created = Version{0, tick};
  item.updated = Version{1, tick + 5};
  item.units = {UnitVersion{1, Version{0, tick}}, UnitVersion{7, Version{1, tick + 5}}};
  item.key = std::move(key);
  return item;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "meshsync-store-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string File(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

// Opens (creating it if need be) the SQLite store at `path` into `store`.
void OpenStore(const std::string& path, std::string_view provider, Random& random,
               std::unique_ptr<MetadataStore>& store) {
  auto opened = OpenSqliteStore(path, provider, random);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  store = std::move(*opened);
}
void OpenRecordsStore(const std::string& path, Random& random,
                      std::unique_ptr<MetadataStore>& store) {
  OpenStore(path, "records", random, store);
}

enum class Kind { kMemory, kSqlite };

class MetadataStoreTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (GetParam() == Kind::kMemory) {
      store_ = OpenMemoryStore(ReplicaId(Id128{4, 2}), "records");
    } else {
      auto opened = OpenSqliteStore(dir_.File("meta.db"), "records", random_);
      ASSERT_TRUE(opened.ok()) << opened.status().ToString();
      store_ = std::move(*opened);
    }
  }

  testing::SeededRandom random_{1};
  TempDir dir_;
  std::unique_ptr<MetadataStore> store_;
};

TEST_P(MetadataStoreTest, NewStoreHasItsOwnIdAsKeyZero) {
  const ReplicaState& state = store_->state();
  EXPECT_EQ(state.provider_name, "records");
  ASSERT_EQ(state.keys.size(), 1u);
  EXPECT_EQ(state.keys.IdOf(0), state.id);
  EXPECT_TRUE(state.knowledge.IsEmpty());
  EXPECT_EQ(state.tick, 0u);
}

TEST_P(MetadataStoreTest, CommitsItemsStateAndConflictsTogether) {
  StoreBatch batch;
  batch.upserts = {Item(3, "c", 100), Item(1, "a", 200), Item(2, "", 300)};
  ReplicaKeyMap keys = store_->state().keys;
  keys.KeyFor(ReplicaId(Id128{9, 9}));
  batch.keys = keys;
  batch.tick = 500;
  batch.knowledge = Knowledge(ClockVector{{0, 500}, {1, 305}});
  ConflictRecord conflict;
  conflict.item = ItemId(0, 1);
  conflict.unit = 7;
  conflict.winner = Version{1, 205};
  conflict.loser = Version{0, 204};
  conflict.loser_data = std::string("lost\0value", 10);
  batch.new_conflicts = {conflict};
  ASSERT_TRUE(store_->Commit(batch).ok());

  EXPECT_EQ(store_->state().tick, 500u);
  EXPECT_EQ(store_->state().keys.size(), 2u);
  EXPECT_EQ(store_->state().knowledge, *batch.knowledge);

  auto got = store_->GetItem(ItemId(0, 1));
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, Item(1, "a", 200));
  auto by_key = store_->FindByKey("c");
  ASSERT_TRUE(by_key.ok() && by_key->has_value());
  EXPECT_EQ((*by_key)->id, ItemId(0, 3));
  EXPECT_FALSE(store_->FindByKey("zzz")->has_value());

  std::vector<ItemMetadata> scanned;
  ASSERT_TRUE(store_->ScanItems(ItemId(0, 2), ItemId::Max(), 10, scanned).ok());
  ASSERT_EQ(scanned.size(), 2u);
  EXPECT_EQ(scanned[0].id, ItemId(0, 2));
  EXPECT_EQ(scanned[1].id, ItemId(0, 3));
  scanned.clear();
  ASSERT_TRUE(store_->ScanItems(ItemId::Min(), ItemId::Max(), 1, scanned).ok());
  ASSERT_EQ(scanned.size(), 1u);
  EXPECT_EQ(scanned[0].id, ItemId(0, 1));

  auto conflicts = store_->ListConflicts();
  ASSERT_TRUE(conflicts.ok());
  ASSERT_EQ(conflicts->size(), 1u);
  EXPECT_EQ((*conflicts)[0].loser_data, conflict.loser_data);
  EXPECT_NE((*conflicts)[0].id, 0u);

  StoreBatch resolve;
  resolve.resolved_conflicts = {(*conflicts)[0].id};
  resolve.erasures = {ItemId(0, 3)};
  ASSERT_TRUE(store_->Commit(resolve).ok());
  EXPECT_TRUE(store_->ListConflicts()->empty());
  EXPECT_FALSE(store_->GetItem(ItemId(0, 3))->has_value());
  EXPECT_FALSE(store_->FindByKey("c")->has_value()) << "erasing an item frees its key";
  EXPECT_EQ(*store_->CountItems(), 2u);
}

TEST_P(MetadataStoreTest, MovingAKeyToAnotherItem) {
  StoreBatch first;
  first.upserts = {Item(1, "path", 10)};
  ASSERT_TRUE(store_->Commit(first).ok());
  StoreBatch second;
  ItemMetadata renamed = Item(1, "other", 10);
  second.upserts = {renamed, Item(2, "path", 20)};
  ASSERT_TRUE(store_->Commit(second).ok());
  EXPECT_EQ((*store_->FindByKey("path"))->id, ItemId(0, 2));
  EXPECT_EQ((*store_->FindByKey("other"))->id, ItemId(0, 1));
}

// A version above the item's update tick (a replica whose clock ran ahead,
// kept by a merge) round-trips like any other: the SQLite codec stored
// ticks as gaps below the update tick, and such an item came back as
// "corrupt item metadata" (found by the convergence property).
TEST_P(MetadataStoreTest, VersionsAboveTheUpdateTickRoundTrip) {
  ItemMetadata item = Item(1, "path", 10);
  item.created = Version{0, 40};
  item.updated = Version{1, 20};
  item.units = {UnitVersion{1, Version{0, 40}}, UnitVersion{7, Version{1, 20}}};
  ItemMetadata tombstone = Item(2, "gone", 10);
  tombstone.tombstone = true;
  tombstone.units = {UnitVersion{1, Version{0, 99}}};
  StoreBatch batch;
  batch.upserts = {item, tombstone};
  ASSERT_TRUE(store_->Commit(batch).ok());
  auto read = store_->GetItem(item.id);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(**read, item);
  read = store_->GetItem(tombstone.id);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(**read, tombstone);
}

// VisitItems hands over one item, read into again and again: what one item
// has (a key, provider state, units) must not show through in the next.
TEST_P(MetadataStoreTest, VisitItemsSeesEachItemAsItIsInIdOrderAndCanStop) {
  std::vector<ItemMetadata> items;
  for (uint64_t n = 1; n <= 9; ++n) {
    ItemMetadata item = Item(n, n % 3 == 0 ? "" : "key" + std::to_string(n), 10 * n);
    if (n % 2 == 0) item.provider_state = std::string(n * 7, static_cast<char>('a' + n));
    if (n % 4 == 0) item.units.clear();
    item.tombstone = n == 5;
    items.push_back(item);
  }
  StoreBatch batch;
  batch.upserts = items;
  ASSERT_TRUE(store_->Commit(batch).ok());

  std::vector<ItemMetadata> seen;
  ASSERT_TRUE(store_
                  ->VisitItems(ItemId::Min(), ItemId::Max(),
                               [&](ItemMetadata& item) {
                                 seen.push_back(item);
                                 return true;
                               })
                  .ok());
  EXPECT_EQ(seen, items);

  seen.clear();
  ASSERT_TRUE(store_
                  ->VisitItems(ItemId(0, 3), ItemId(0, 7),
                               [&](ItemMetadata& item) {
                                 seen.push_back(item);
                                 return item.id != ItemId(0, 5);
                               })
                  .ok());
  EXPECT_EQ(seen, std::vector<ItemMetadata>(items.begin() + 2, items.begin() + 5))
      << "from 3 through 5, where the visitor stopped";

  // A visit inside a visit reads the same items.
  size_t inner = 0;
  ASSERT_TRUE(store_
                  ->VisitItems(ItemId::Min(), ItemId(0, 2),
                               [&](ItemMetadata&) {
                                 EXPECT_TRUE(store_
                                                 ->VisitItems(ItemId::Min(), ItemId::Max(),
                                                              [&](ItemMetadata&) {
                                                                ++inner;
                                                                return true;
                                                              })
                                                 .ok());
                                 return true;
                               })
                  .ok());
  EXPECT_EQ(inner, 2 * items.size());
}

INSTANTIATE_TEST_SUITE_P(Stores, MetadataStoreTest, ::testing::Values(Kind::kMemory, Kind::kSqlite),
                         [](const auto& param_info) {
                           return param_info.param == Kind::kMemory ? "Memory" : "Sqlite";
                         });

TEST(SqliteStoreTest, StateSurvivesReopen) {
  TempDir dir;
  testing::SeededRandom random(3);
  ReplicaId id;
  Knowledge knowledge = Knowledge(ClockVector{{0, 9}, {1, 4}}).Exclude(ItemId(0, 5));
  {
    auto store = OpenSqliteStore(dir.File("m.db"), "files", random);
    ASSERT_TRUE(store.ok());
    id = (*store)->state().id;
    StoreBatch batch;
    ReplicaKeyMap keys = (*store)->state().keys;
    keys.KeyFor(ReplicaId(Id128{7, 7}));
    batch.keys = keys;
    batch.knowledge = knowledge;
    batch.forgotten = Knowledge(ClockVector{{1, 2}});
    batch.tick = uint64_t{1} << 60;
    batch.upserts = {Item(1, "x", 3)};
    ASSERT_TRUE((*store)->Commit(batch).ok());
  }
  auto store = OpenSqliteStore(dir.File("m.db"), "files", random);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->state().id, id);
  EXPECT_EQ((*store)->state().knowledge, knowledge);
  EXPECT_EQ((*store)->state().forgotten, Knowledge(ClockVector{{1, 2}}));
  EXPECT_EQ((*store)->state().tick, uint64_t{1} << 60);
  EXPECT_EQ(*(*store)->GetItem(ItemId(0, 1)), Item(1, "x", 3));
}

// Everything `store` would send a peer that knows `known`, read a window
// of `limit` at a time as a session does; counts the indexed windows.
std::vector<ItemMetadata> AllChanges(MetadataStore& store, const Knowledge& known, size_t limit,
                                     int* indexed) {
  std::vector<ItemMetadata> out;
  ItemId first = ItemId::Min();
  while (true) {
    MetadataStore::ChangeScan scan;
    Status status = store.ScanChanges(first, known, limit, out, scan);
    EXPECT_TRUE(status.ok()) << status.ToString();
    if (!status.ok()) return out;
    if (scan.indexed) ++*indexed;
    if (scan.through == ItemId::Max()) return out;
    EXPECT_FALSE(scan.through < first);
    first = scan.through.Next();
  }
}

// Random commits, each changing some of 300 items from one of two
// replicas and raising the knowledge to match; after each, the SQLite
// store's change scans for peers at every earlier state (and at states no
// commit left) must equal a plain scan of the same items. Reopens the store
// along the way, so the log and checkpoints are read back from the file.
// In the background case each scan runs with the last commit still laid
// over the file (until a flush), as a session's first scan may.
class SqliteChangeLogTest : public ::testing::TestWithParam<bool> {};

TEST_P(SqliteChangeLogTest, ChangeLogScansMatchFullScans) {
  const bool background = GetParam();
  TempDir dir;
  testing::SeededRandom random(11);
  std::unique_ptr<MetadataStore> store;
  ASSERT_NO_FATAL_FAILURE(OpenRecordsStore(dir.File("m.db"), random, store));
  std::unique_ptr<MetadataStore> plain = OpenMemoryStore(store->state().id, "records");
  ReplicaKeyMap keys = store->state().keys;
  keys.KeyFor(ReplicaId(Id128{9, 9}));
  std::vector<Knowledge> seen = {Knowledge()};
  ClockVector clock;
  Tick tick = 100;
  int indexed = 0;
  for (int round = 0; round < 40; ++round) {
    StoreBatch batch;
    batch.keys = keys;
    size_t changed = round == 0 ? 300 : 1 + random.Next64() % (round % 7 == 0 ? 120 : 12);
    for (size_t i = 0; i < changed; ++i) {
      uint64_t n = round == 0 ? i : random.Next64() % 300;
      ReplicaKey who = static_cast<ReplicaKey>(random.Next64() % 2);
      Version v{who, ++tick};
      auto existing = plain->GetItem(ItemId(1, n));
      ASSERT_TRUE(existing.ok());
      ItemMetadata item = existing->value_or(ItemMetadata{});
      if (!existing->has_value()) {
        item.id = ItemId(1, n);
        item.created = v;
      }
      item.SetUnit(1 + static_cast<ChangeUnitId>(random.Next64() % 3), v);
      item.updated = v;
      item.tombstone = random.Next64() % 10 == 0;
      item.key = "k" + std::to_string(n);
      clock.Raise(who, v.tick);
      batch.upserts.push_back(item);
    }
    // Two items can be drawn twice: the later one stands, in both stores.
    std::map<ItemId, ItemMetadata> last;
    for (const ItemMetadata& item : batch.upserts) last[item.id] = item;
    batch.upserts.clear();
    for (auto& [id, item] : last) batch.upserts.push_back(item);
    // Some rounds only refresh items without new versions: the knowledge
    // stays, and the newest checkpoint moves forward.
    if (round % 5 != 3) batch.knowledge = Knowledge(clock);
    if (round % 5 == 3) {
      std::vector<ItemMetadata> refreshed;
      for (const ItemMetadata& item : batch.upserts) {
        auto existing = plain->GetItem(item.id);
        ASSERT_TRUE(existing.ok());
        if (!existing->has_value()) continue;
        refreshed.push_back(**existing);
        refreshed.back().provider_state = "refreshed " + std::to_string(round);
      }
      batch.upserts = std::move(refreshed);
    }
    Status committed = background ? store->CommitInBackground(batch) : store->Commit(batch);
    ASSERT_TRUE(committed.ok()) << committed.ToString();
    ASSERT_TRUE(plain->Commit(batch).ok());
    seen.push_back(store->state().knowledge);
    if (round % 13 == 12) {
      store.reset();
      auto again = OpenSqliteStore(dir.File("m.db"), "records", random);
      ASSERT_TRUE(again.ok()) << again.status().ToString();
      store = std::move(*again);
    }

    // The newest first: a scan that finds no checkpoint reads every item,
    // which waits for the commit in flight.
    std::vector<Knowledge> peers(seen.rbegin(), seen.rend());
    // A peer that knows a little more than some checkpoint (another
    // replica's edit), and one that knows less than any.
    Knowledge more = seen[seen.size() / 2];
    more.RaiseEverywhere(Version{1, tick - 3});
    peers.push_back(more);
    peers.push_back(Knowledge(ClockVector{{0, 150}}));
    for (const Knowledge& peer : peers) {
      size_t limit = 1 + random.Next64() % 40;
      int ignored = 0;
      std::vector<ItemMetadata> want = AllChanges(*plain, peer, limit, &ignored);
      std::vector<ItemMetadata> got = AllChanges(*store, peer, limit, &indexed);
      ASSERT_EQ(got, want) << "round " << round << ", peer " << peer.ToString();
    }
  }
  // The test is worth something only if the log was used.
  EXPECT_GT(indexed, 100);
}

INSTANTIATE_TEST_SUITE_P(Commits, SqliteChangeLogTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return param.param ? "InTheBackground" : "InTheForeground";
                         });

// Twenty items made by replica key 0 at tick 10, with knowledge {0:10}.
StoreBatch TwentyItemsAtTickTen() {
  StoreBatch batch;
  for (uint64_t n = 0; n < 20; ++n) {
    ItemMetadata item;
    item.id = ItemId(0, n);
    item.created = item.updated = Version{0, 10};
    item.units = {UnitVersion{1, Version{0, 10}}};
    batch.upserts.push_back(item);
  }
  batch.knowledge = Knowledge(ClockVector{{0, 10}});
  return batch;
}

// An item its own store's knowledge does not cover breaks the premise of
// the log: the store stops using it, for good, and still answers right.
TEST(SqliteStoreTest, ChangeLogTurnsOffWhenAnItemIsNotKnown) {
  TempDir dir;
  testing::SeededRandom random(5);
  {
    auto store = OpenSqliteStore(dir.File("m.db"), "records", random);
    ASSERT_TRUE(store.ok());
    StoreBatch batch = TwentyItemsAtTickTen();
    ASSERT_TRUE((*store)->Commit(batch).ok());
    StoreBatch odd;
    odd.upserts = {batch.upserts[3]};
    odd.upserts[0].SetUnit(2, Version{0, 50});  // a version the knowledge lacks
    odd.knowledge = Knowledge(ClockVector{{0, 20}});
    ASSERT_TRUE((*store)->Commit(odd).ok());
  }
  auto store = OpenSqliteStore(dir.File("m.db"), "records", random);
  ASSERT_TRUE(store.ok());
  int indexed = 0;
  std::vector<ItemMetadata> got =
      AllChanges(**store, *TwentyItemsAtTickTen().knowledge, 100, &indexed);
  EXPECT_EQ(indexed, 0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, ItemId(0, 3));
}

// A checkpoint whose bytes are damaged is passed over: the store opens, and
// a peer at that checkpoint still gets exactly what it lacks.
TEST(SqliteStoreTest, ACorruptCheckpointIsPassedOver) {
  TempDir dir;
  testing::SeededRandom random(5);
  {
    auto store = OpenSqliteStore(dir.File("m.db"), "records", random);
    ASSERT_TRUE(store.ok());
    StoreBatch batch = TwentyItemsAtTickTen();
    ASSERT_TRUE((*store)->Commit(batch).ok());
    StoreBatch edit;
    edit.upserts = {batch.upserts[5]};
    edit.upserts[0].SetUnit(1, Version{0, 11});
    edit.upserts[0].updated = Version{0, 11};
    edit.knowledge = Knowledge(ClockVector{{0, 11}});
    ASSERT_TRUE((*store)->Commit(edit).ok());
  }
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(dir.File("m.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "UPDATE checkpoints SET knowledge = x'ff00ff'", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(dir.File("m.db"), "records", random);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  int indexed = 0;
  std::vector<ItemMetadata> got =
      AllChanges(**store, *TwentyItemsAtTickTen().knowledge, 100, &indexed);
  EXPECT_EQ(indexed, 0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, ItemId(0, 5));
}

// A store written by the version before the change log opens, and its
// first commit starts the log: items it never logged are covered by the
// knowledge of that commit.
TEST(SqliteStoreTest, MigratesAVersionOneStore) {
  TempDir dir;
  testing::SeededRandom random(5);
  {
    auto store = OpenSqliteStore(dir.File("m.db"), "records", random);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Commit(TwentyItemsAtTickTen()).ok());
  }
  sqlite3* db;  // back to version 1, as that release left it
  ASSERT_EQ(sqlite3_open(dir.File("m.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE changes; DROP TABLE checkpoints; PRAGMA user_version=1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(dir.File("m.db"), "records", random);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  StoreBatch edit;
  auto item = (*store)->GetItem(ItemId(0, 7));
  ASSERT_TRUE(item.ok() && item->has_value());
  edit.upserts = {**item};
  edit.upserts[0].SetUnit(1, Version{0, 11});
  edit.upserts[0].updated = Version{0, 11};
  edit.knowledge = Knowledge(ClockVector{{0, 11}});
  ASSERT_TRUE((*store)->Commit(edit).ok());
  StoreBatch again = edit;
  again.upserts[0].SetUnit(1, Version{0, 12});
  again.upserts[0].updated = Version{0, 12};
  again.knowledge = Knowledge(ClockVector{{0, 12}});
  ASSERT_TRUE((*store)->Commit(again).ok());
  int indexed = 0;
  std::vector<ItemMetadata> got =
      AllChanges(**store, Knowledge(ClockVector{{0, 11}}), 100, &indexed);
  EXPECT_EQ(indexed, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, ItemId(0, 7));
  // A peer from before the migration is not helped by the log, and gets
  // everything it lacks all the same.
  got = AllChanges(**store, Knowledge(ClockVector{{0, 9}}), 100, &indexed);
  EXPECT_EQ(indexed, 1);
  EXPECT_EQ(got.size(), 20u);
}

// The statement that reads the items stays open through a visit, and a
// commit would have to end its read transaction under it.
TEST(SqliteStoreTest, ACommitDuringAVisitIsRefused) {
  TempDir dir;
  testing::SeededRandom random(9);
  auto store = OpenSqliteStore(dir.File("m.db"), "files", random);
  ASSERT_TRUE(store.ok());
  StoreBatch batch;
  batch.upserts = {Item(1, "a", 10), Item(2, "b", 20)};
  ASSERT_TRUE((*store)->Commit(batch).ok());
  Status during;
  ASSERT_TRUE((*store)
                  ->VisitItems(ItemId::Min(), ItemId::Max(),
                               [&](ItemMetadata&) {
                                 StoreBatch more;
                                 more.upserts = {Item(3, "c", 30)};
                                 during = (*store)->Commit(more);
                                 return false;
                               })
                  .ok());
  EXPECT_EQ(during.code(), StatusCode::kFailedPrecondition) << during.ToString();
  EXPECT_FALSE((*store)->GetItem(ItemId(0, 3))->has_value());
  StoreBatch after;
  after.upserts = {Item(3, "c", 30)};
  EXPECT_TRUE((*store)->Commit(after).ok()) << "the store commits again once the visit is over";
}

// Opening a store of the current schema only reads it, so it opens while
// another connection holds the write lock (a sync in progress, a status
// query beside it). A write at open waited for that lock, then failed.
TEST(SqliteStoreTest, OpensWhileAnotherConnectionWrites) {
  TempDir dir;
  testing::SeededRandom random(5);
  const std::string path = dir.File("m.db");
  { ASSERT_TRUE(OpenSqliteStore(path, "files", random).ok()); }
  sqlite3* writer = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &writer), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(writer, "BEGIN IMMEDIATE; INSERT INTO conflicts(record) VALUES (x'00')",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  auto store = OpenSqliteStore(path, "files", random);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  if (store.ok()) {
    EXPECT_EQ(*(*store)->CountItems(), 0u);
  }
  sqlite3_exec(writer, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(writer);
}

// A corrupt item ends a visit with kDataLoss, not a crash or a silently
// shorter index, and the store is usable after it.
TEST(SqliteStoreTest, ACorruptItemEndsAVisitWithDataLoss) {
  TempDir dir;
  testing::SeededRandom random(11);
  const std::string path = dir.File("m.db");
  {
    auto store = OpenSqliteStore(path, "files", random);
    ASSERT_TRUE(store.ok());
    StoreBatch batch;
    batch.upserts = {Item(1, "a", 10), Item(2, "b", 20), Item(3, "c", 30)};
    ASSERT_TRUE((*store)->Commit(batch).ok());
  }
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw, "UPDATE items SET versions = x'07' WHERE key = CAST('b' AS BLOB)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(raw);

  auto store = OpenSqliteStore(path, "files", random);
  ASSERT_TRUE(store.ok());
  std::vector<ItemId> seen;
  Status visited = (*store)->VisitItems(ItemId::Min(), ItemId::Max(), [&](ItemMetadata& item) {
    seen.push_back(item.id);
    return true;
  });
  EXPECT_EQ(visited.code(), StatusCode::kDataLoss) << visited.ToString();
  EXPECT_EQ(seen, std::vector<ItemId>{ItemId(0, 1)}) << "nothing past the corrupt item";
  StoreBatch after;
  after.upserts = {Item(2, "b", 40)};
  EXPECT_TRUE((*store)->Commit(after).ok()) << "the store commits again after the failed visit";
}

TEST(SqliteStoreTest, RefusesAnotherProvidersStore) {
  TempDir dir;
  testing::SeededRandom random(3);
  ASSERT_TRUE(OpenSqliteStore(dir.File("m.db"), "files", random).ok());
  auto wrong = OpenSqliteStore(dir.File("m.db"), "records", random);
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition);
}

TEST(SqliteStoreTest, RefusesASchemaFromTheFuture) {
  TempDir dir;
  testing::SeededRandom random(3);
  ASSERT_TRUE(OpenSqliteStore(dir.File("m.db"), "files", random).ok());
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(dir.File("m.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto reopened = OpenSqliteStore(dir.File("m.db"), "files", random);
  EXPECT_EQ(reopened.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(reopened.status().message().find("newer"), std::string_view::npos);
}

TEST(SqliteStoreTest, MigratesAnEmptyDatabase) {
  TempDir dir;
  sqlite3* db;  // an SQLite file at schema version 0, as an older tool might leave
  ASSERT_EQ(sqlite3_open(dir.File("m.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE unrelated(x)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  testing::SeededRandom random(3);
  auto store = OpenSqliteStore(dir.File("m.db"), "files", random);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(*(*store)->CountItems(), 0u);
}

TEST(SqliteStoreTest, CorruptFileIsDataLossNotACrash) {
  TempDir dir;
  {
    std::ofstream out(dir.File("m.db"), std::ios::binary);
    out << std::string(8192, 'x');
  }
  testing::SeededRandom random(3);
  auto store = OpenSqliteStore(dir.File("m.db"), "files", random);
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
}

TEST(SqliteStoreTest, UnopenablePathIsUnavailable) {
  testing::SeededRandom random(3);
  auto store = OpenSqliteStore("/nonexistent-dir/m.db", "files", random);
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
}

// Commits `commits` batches that each rewrite 100 items of 3 KB, about 100
// pages of the log. In the background, each followed by lookups of every
// item, as a detection pass goes on reading while its batches are written.
// With `fresh_ids`, each commit writes 100 new items instead.
void RewriteItems(MetadataStore& store, int commits, bool background, bool fresh_ids = false) {
  constexpr int kItems = 100;
  for (int c = 0; c < commits; ++c) {
    StoreBatch batch;
    for (int n = 0; n < kItems; ++n) {
      ItemMetadata item = Item(fresh_ids ? c * kItems + n : n, "", 1);
      item.provider_state = std::string(3000, static_cast<char>('a' + c % 26));
      batch.upserts.push_back(std::move(item));
    }
    batch.tick = static_cast<Tick>(c + 1);
    if (!background) {
      ASSERT_TRUE(store.Commit(batch).ok());
      continue;
    }
    ASSERT_TRUE(store.CommitInBackground(batch).ok());
    for (int n = 0; n < kItems; ++n) {
      auto item = store.GetItem(ItemId(0, n));
      ASSERT_TRUE(item.ok() && item->has_value());
      ASSERT_EQ((**item).provider_state, batch.upserts[n].provider_state);
    }
  }
  ASSERT_TRUE(store.Flush().ok());
}

// Checkpoints run on a thread of their own, and the next commit checkpoints
// on the caller's thread should they fall behind: however many commits a
// store takes, in the background or not, its write-ahead log stays bounded,
// and every commit is kept. In the background, the lookups' snapshot must
// not keep the log from starting over.
class SqliteLogTest : public ::testing::TestWithParam<bool> {};

TEST_P(SqliteLogTest, TheLogStaysBoundedAcrossManyCommits) {
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(5);
  std::unique_ptr<MetadataStore> store;
  ASSERT_NO_FATAL_FAILURE(OpenStore(path, "files", random, store));
  // 16,000 pages in all, twice the 8,000 at which the store checkpoints on
  // the caller's thread, and 20 times the 1,000 that start a background
  // checkpoint.
  constexpr int kCommits = 160;
  RewriteItems(*store, kCommits, GetParam());
  // A log frame is a 4 KiB page and 24 bytes; the file keeps its largest
  // size. At most 8,000 pages plus the commit that crossed that line (and
  // the next, if the first checkpoint was busy).
  uintmax_t frames = (fs::file_size(path + "-wal") - 32) / (4096 + 24);
  EXPECT_LE(frames, 8000u + 2 * 150u);
  store.reset();

  ASSERT_NO_FATAL_FAILURE(OpenStore(path, "files", random, store));
  EXPECT_EQ(store->state().tick, static_cast<Tick>(kCommits));
  auto item = store->GetItem(ItemId(0, 99));
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ((**item).provider_state,
            std::string(3000, static_cast<char>('a' + (kCommits - 1) % 26)));
}

INSTANTIATE_TEST_SUITE_P(Commits, SqliteLogTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return param.param ? "InTheBackground" : "InTheForeground";
                         });

// Once commits leave 1,000 pages in the log, the store's own thread copies
// them into the database, with no further commit to prompt it. In WAL mode
// only a checkpoint writes the database file, so its growth shows the copy.
TEST(SqliteStoreTest, TheLogIsCopiedBackWithoutAnotherCommit) {
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(6);
  std::unique_ptr<MetadataStore> store;
  ASSERT_NO_FATAL_FAILURE(OpenStore(path, "files", random, store));
  uintmax_t before = fs::file_size(path);
  // 15 commits of about 100 pages each: past 1,000, far below the 8,000 at
  // which the committing thread would checkpoint itself.
  RewriteItems(*store, 15, /*background=*/false, /*fresh_ids=*/true);
  // Waits for the thread, however slow the machine; gives up only so as not
  // to hang.
  for (int waited = 0; fs::file_size(path) < before + (1u << 20) && waited < 3000; ++waited)
    usleep(10'000);
  EXPECT_GE(fs::file_size(path), before + (1u << 20));
}

// Once the store's own thread has copied all of the log into the database,
// closing the store empties the log: the next process to open the store
// rebuilds its index of the log from the whole file. A store closed with
// part of the log not yet copied leaves it as it is (copying it would hold
// up the close).
TEST(SqliteStoreTest, ClosingEmptiesALogThatIsAllCopied) {
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(7);
  std::string wal = path + "-wal";
  std::unique_ptr<MetadataStore> store;
  ASSERT_NO_FATAL_FAILURE(OpenStore(path, "files", random, store));
  RewriteItems(*store, 1, /*background=*/false, /*fresh_ids=*/true);  // below 1,000 pages
  store.reset();
  EXPECT_GT(fs::file_size(wal), 0u);
  {
    ASSERT_NO_FATAL_FAILURE(OpenStore(path, "files", random, store));
    // One commit of more than 1,000 pages: the thread is asked to copy the
    // log after it.
    StoreBatch batch;
    for (int n = 0; n < 1500; ++n) {
      ItemMetadata item = Item(10'000 + n, "", 1);
      item.provider_state = std::string(3000, 'x');
      batch.upserts.push_back(std::move(item));
    }
    batch.tick = 100;
    ASSERT_TRUE(store->Commit(batch).ok());
    // The WAL index (SQLite's file format): the log's last frame at byte
    // 16, and how far it is copied at byte 96. Waits until the thread has
    // copied all of it, however slow the machine; gives up only so as not
    // to hang.
    auto copied_all = [&path] {
      std::ifstream shm(path + "-shm", std::ios::binary);
      char header[100] = {};
      if (!shm.read(header, sizeof header)) return false;
      uint32_t last = 0, copied = 0;
      std::memcpy(&last, header + 16, 4);
      std::memcpy(&copied, header + 96, 4);
      return last > 0 && copied == last;
    };
    int polls = 0;
    for (; !copied_all() && polls < 3000; ++polls) usleep(10'000);
    ASSERT_LT(polls, 3000) << "the log was never copied";
    usleep(10'000);  // past the few instructions between the copy and its record
    store.reset();
  }
  EXPECT_EQ(fs::file_size(wal), 0u);
  ASSERT_NO_FATAL_FAILURE(OpenStore(path, "files", random, store));
  EXPECT_GT(*store->CountItems(), 0u);
}

// Batches committed in the background read as if they were committed:
// random batches (upserts that add, change and move keys, erasures, the
// same id both ways in one batch) go to a memory store and, in the
// foreground, in the background or staged, to a SQLite store (new, so that
// it answers lookups from the fingerprints of what it was given, until it
// is reopened); after each, point lookups, key lookups and range scans of
// random bounds and limits agree, and so does the store reopened from disk.
TEST(SqliteStoreTest, BackgroundCommitsReadLikeCommittedOnes) {
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(21);
  std::unique_ptr<MetadataStore> store;
  ASSERT_NO_FATAL_FAILURE(OpenRecordsStore(path, random, store));
  std::unique_ptr<MetadataStore> model = OpenMemoryStore(store->state().id, "records");
  std::mt19937_64 rng(7);
  auto pick = [&rng](uint64_t n) { return rng() % n; };
  constexpr uint64_t kIds = 300;
  auto key_of = [](uint64_t id, uint64_t variant) {
    return "k" + std::to_string(id) + "-" + std::to_string(variant);
  };
  for (int round = 0; round < 120; ++round) {
    StoreBatch batch;
    size_t upserts = pick(40);
    for (size_t i = 0; i < upserts; ++i) {
      uint64_t id = pick(kIds);
      uint64_t variant = pick(4);  // 3: no key
      ItemMetadata item = Item(id, variant == 3 ? "" : key_of(id, variant), 10 + round);
      item.tombstone = pick(5) == 0;
      item.provider_state = std::string(pick(50), static_cast<char>('a' + round % 26));
      batch.upserts.push_back(std::move(item));
    }
    size_t erasures = pick(8);
    for (size_t i = 0; i < erasures; ++i) batch.erasures.push_back(ItemId(0, pick(kIds)));
    batch.tick = static_cast<Tick>(round + 1);
    ASSERT_TRUE(model->Commit(batch).ok());
    // In the foreground, in the background, or staged and released.
    uint64_t mode = pick(5);
    Status committed = mode == 0   ? store->Commit(batch)
                       : mode == 1 ? store->StageInBackground(batch)
                                   : store->CommitInBackground(batch);
    if (committed.ok() && mode == 1) committed = store->ReleaseStaged();
    ASSERT_TRUE(committed.ok()) << committed.ToString();
    ASSERT_EQ(store->state().tick, model->state().tick);

    for (int read = 0; read < 20; ++read) {
      uint64_t id = pick(kIds);
      auto got = store->GetItem(ItemId(0, id));
      auto want = model->GetItem(ItemId(0, id));
      ASSERT_TRUE(got.ok() && want.ok()) << got.status().ToString();
      ASSERT_EQ(*got, *want) << "round " << round << " item " << id;

      std::string key = key_of(pick(kIds), pick(3));
      auto by_key = store->FindByKey(key);
      auto want_by_key = model->FindByKey(key);
      ASSERT_TRUE(by_key.ok() && want_by_key.ok()) << by_key.status().ToString();
      ASSERT_EQ(*by_key, *want_by_key) << "round " << round << " key " << key;

      uint64_t first = pick(kIds);
      uint64_t last = first + pick(kIds - first);
      size_t limit = pick(4) == 0 ? 1000 : pick(30);
      std::vector<ItemMetadata> scanned, want_scanned;
      ASSERT_TRUE(store->ScanItems(ItemId(0, first), ItemId(0, last), limit, scanned).ok());
      ASSERT_TRUE(model->ScanItems(ItemId(0, first), ItemId(0, last), limit, want_scanned).ok());
      ASSERT_EQ(scanned, want_scanned)
          << "round " << round << " scan " << first << ".." << last << " limit " << limit;
    }
    if (round % 40 == 39) {  // reopened: what is on disk agrees too
      ASSERT_TRUE(store->Flush().ok());
      store.reset();
      ASSERT_NO_FATAL_FAILURE(OpenRecordsStore(path, random, store));
      std::vector<ItemMetadata> all, want_all;
      ASSERT_TRUE(store->ScanItems(ItemId::Min(), ItemId::Max(), SIZE_MAX, all).ok());
      ASSERT_TRUE(model->ScanItems(ItemId::Min(), ItemId::Max(), SIZE_MAX, want_all).ok());
      ASSERT_EQ(all, want_all);
      ASSERT_EQ(store->state().tick, model->state().tick);
    }
  }
}

// The set an empty store keeps of what it holds (to answer lookups of
// what it does not hold without a query) holds everything added, until it
// is full, and refuses more after that.
TEST(FingerprintSetTest, HoldsWhatWasAddedUntilFull) {
  store::FingerprintSet set(3000);
  std::vector<uint64_t> added;
  for (uint64_t n = 0; n < 3000; ++n) {
    uint64_t print = n % 2 == 0 ? store::FingerprintSet::Of(ItemId(n, n * 7))
                                : store::FingerprintSet::Of("key " + std::to_string(n));
    ASSERT_TRUE(set.Add(print)) << n;
    added.push_back(print);
  }
  ASSERT_TRUE(set.Add(added.front()));  // already held
  EXPECT_EQ(set.size(), 3000u);
  EXPECT_FALSE(set.Add(store::FingerprintSet::Of("one too many")));
  EXPECT_EQ(set.size(), 3000u);
  for (uint64_t print : added) EXPECT_TRUE(set.Contains(print));
  size_t found = 0;
  for (uint64_t n = 3000; n < 6000; ++n) {
    found += set.Contains(store::FingerprintSet::Of(ItemId(n, n * 7)));
    found += set.Contains(store::FingerprintSet::Of("key " + std::to_string(n)));
  }
  EXPECT_EQ(found, 0u);  // 64-bit fingerprints of 6,000 others: none collide
}

// A batch that fails in the background is reported by the next call that
// waits for it, and by every call after that: the store's state in memory
// is ahead of the file, so it must be reopened.
TEST(SqliteStoreTest, ABackgroundFailureStopsTheStore) {
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(22);
  auto store = OpenSqliteStore(path, "records", random);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  StoreBatch first;
  first.upserts = {Item(1, "a", 100)};
  first.tick = 100;
  ASSERT_TRUE((*store)->Commit(first).ok());
  // Another process breaks the schema: the next batch cannot log its
  // conflict.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "DROP TABLE conflicts", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);

  StoreBatch second;
  second.upserts = {Item(2, "b", 200)};
  second.tick = 200;
  second.new_conflicts.emplace_back();
  second.new_conflicts.back().item = ItemId(0, 2);
  Status started = (*store)->CommitInBackground(second);
  Status flushed = (*store)->Flush();
  EXPECT_FALSE(started.ok() && flushed.ok());
  EXPECT_FALSE((*store)->Flush().ok());
  EXPECT_FALSE((*store)->GetItem(ItemId(0, 1)).ok());
  EXPECT_FALSE((*store)->Commit(first).ok());
  store->reset();

  // Nothing of the failed batch is on disk (once the schema is mended, the
  // store opens again).
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "CREATE TABLE conflicts(id INTEGER PRIMARY KEY, record BLOB)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(other);
  auto reopened = OpenSqliteStore(path, "records", random);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->state().tick, 100u);
  auto item = (*reopened)->GetItem(ItemId(0, 2));
  ASSERT_TRUE(item.ok()) << item.status().ToString();
  EXPECT_FALSE(item->has_value());
}

// A staged batch is written but not committed: a second view of the file
// does not see it until ReleaseStaged, and the store itself holds it in the
// meantime. Abandoned, nothing of it reaches the file, and the store, whose
// state had taken it in, fails until it is reopened; so does closing with a
// batch still staged, without waiting for ever.
TEST(SqliteStoreTest, AStagedBatchIsCommittedOnlyOnRelease) {
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(23);
  std::unique_ptr<MetadataStore> store;
  ASSERT_NO_FATAL_FAILURE(OpenRecordsStore(path, random, store));
  auto on_disk = [&path](uint64_t n) -> std::optional<ItemMetadata> {
    auto snapshot = OpenSqliteSnapshot(path, "records");
    EXPECT_TRUE(snapshot.ok()) << snapshot.status().ToString();
    if (!snapshot.ok()) return std::nullopt;
    auto item = (*snapshot)->GetItem(ItemId(0, n));
    EXPECT_TRUE(item.ok()) << item.status().ToString();
    return item.ok() ? *item : std::nullopt;
  };
  StoreBatch first;
  first.upserts = {Item(1, "a", 10)};
  first.tick = 10;
  ASSERT_TRUE(store->Commit(first).ok());

  StoreBatch staged;
  for (uint64_t n = 2; n < 500; ++n) staged.upserts.push_back(Item(n, "k" + std::to_string(n), 20));
  staged.tick = 20;
  ASSERT_TRUE(store->StageInBackground(staged).ok());
  EXPECT_EQ(store->StageInBackground(staged).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Flush().code(), StatusCode::kFailedPrecondition);  // it would wait for ever
  // The store's writer takes the file's write lock and keeps it: another
  // connection finds it taken, time after time, and never finds the batch
  // committed meanwhile. (Found free, the writer has yet to start; the
  // other connection lets go at once.)
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  int held = 0;
  for (int attempt = 0; attempt < 20'000 && held < 200; ++attempt) {
    if (sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK) {
      sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
      held = 0;
    } else {
      ++held;
    }
    ASSERT_FALSE(on_disk(2).has_value()) << "committed before its release";
  }
  sqlite3_close(other);
  EXPECT_EQ(held, 200) << "the writer never held the batch";
  EXPECT_TRUE(on_disk(1).has_value());
  // Not committed, but read (the engine decides its next batch meanwhile).
  EXPECT_TRUE(store->ShowsStaged());
  EXPECT_EQ(*store->GetItem(ItemId(0, 499)), Item(499, "k499", 20));
  auto by_key = store->FindByKey("k250");
  ASSERT_TRUE(by_key.ok() && by_key->has_value());
  EXPECT_EQ((*by_key)->id, ItemId(0, 250));
  std::vector<ItemMetadata> scanned;
  ASSERT_TRUE(store->ScanItems(ItemId(0, 1), ItemId(0, 3), 10, scanned).ok());
  EXPECT_EQ(scanned,
            (std::vector<ItemMetadata>{Item(1, "a", 10), Item(2, "k2", 20), Item(3, "k3", 20)}));
  EXPECT_EQ(store->state().tick, 20u);
  ASSERT_TRUE(store->ReleaseStaged().ok());
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_EQ(on_disk(499), Item(499, "k499", 20));
  EXPECT_EQ(store->state().tick, 20u);

  StoreBatch dropped;
  dropped.upserts = {Item(600, "x", 30)};
  dropped.tick = 30;
  ASSERT_TRUE(store->StageInBackground(dropped).ok());
  store->AbandonStaged();
  EXPECT_FALSE(store->Flush().ok());
  EXPECT_FALSE(store->GetItem(ItemId(0, 1)).ok());
  store.reset();
  ASSERT_NO_FATAL_FAILURE(OpenRecordsStore(path, random, store));
  EXPECT_EQ(store->state().tick, 20u);
  EXPECT_FALSE(on_disk(600).has_value());

  ASSERT_TRUE(store->StageInBackground(dropped).ok());
  store.reset();  // closed with the batch staged: dropped
  EXPECT_FALSE(on_disk(600).has_value());
  ASSERT_NO_FATAL_FAILURE(OpenRecordsStore(path, random, store));
  EXPECT_EQ(store->state().tick, 20u);
}

// The default staging (the memory store's): kept, then committed on
// release, or dropped.
TEST(MemoryStoreTest, AStagedBatchIsCommittedOnlyOnRelease) {
  std::unique_ptr<MetadataStore> store = OpenMemoryStore(ReplicaId(Id128{1, 1}), "records");
  EXPECT_FALSE(store->ShowsStaged());  // so a caller reads nothing meanwhile
  StoreBatch batch;
  batch.upserts = {Item(1, "a", 10)};
  batch.tick = 10;
  ASSERT_TRUE(store->StageInBackground(batch).ok());
  store->AbandonStaged();
  ASSERT_TRUE(store->ReleaseStaged().ok());  // nothing staged
  EXPECT_FALSE(store->GetItem(ItemId(0, 1))->has_value());
  ASSERT_TRUE(store->StageInBackground(batch).ok());
  ASSERT_TRUE(store->ReleaseStaged().ok());
  EXPECT_EQ(*store->GetItem(ItemId(0, 1)), Item(1, "a", 10));
  EXPECT_EQ(store->state().tick, 10u);
}

// Kills a child process that commits batches as fast as it can, at an
// arbitrary moment, many times; after each kill the store must reopen with
// a consistent state: every committed batch whole, none in part.
TEST(SqliteStoreCrashTest, KillNineDuringCommitsLeavesWholeBatches) {
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(11);
  { ASSERT_TRUE(OpenSqliteStore(path, "files", random).ok()); }
  constexpr int kItemsPerBatch = 50;
  for (int round = 0; round < 8; ++round) {
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      testing::SeededRandom child_random(round);
      auto store = OpenSqliteStore(path, "files", child_random);
      if (!store.ok()) _exit(2);
      for (uint64_t batch_idx = 0;; ++batch_idx) {
        // Batch b writes items b*50 .. b*50+49 and sets tick = b+1: after a
        // crash the tick says exactly how many items must exist.
        Tick tick = (*store)->state().tick + 1;
        StoreBatch batch;
        for (int n = 0; n < kItemsPerBatch; ++n) {
          batch.upserts.push_back(Item((tick - 1) * kItemsPerBatch + n, "", 1));
        }
        batch.tick = tick;
        batch.knowledge = Knowledge(ClockVector{{0, tick}});
        if (!(*store)->Commit(batch).ok()) _exit(3);
      }
    }
    usleep(20'000 + static_cast<useconds_t>(random.Next64() % 60'000));
    kill(child, SIGKILL);
    int wstatus;
    waitpid(child, &wstatus, 0);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited on its own: " << WEXITSTATUS(wstatus);

    auto store = OpenSqliteStore(path, "files", random);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    Tick tick = (*store)->state().tick;
    EXPECT_EQ((*store)->state().knowledge, Knowledge(ClockVector{{0, tick}}));
    EXPECT_EQ(*(*store)->CountItems(), tick * kItemsPerBatch) << "round " << round;
  }
}

// Which commits a power cut may undo: those that issue none of the
// replica's own versions (replica key 0, newer than its tick) and record no
// conflict.
TEST(MayBeUndoneByPowerCutTest, OnlyLearnedVersionsAndStateMay) {
  ReplicaState state;
  state.tick = 100;
  ItemMetadata learned;
  learned.id = ItemId(0, 1);
  learned.created = Version{1, 500};
  learned.updated = Version{2, 600};
  learned.units = {UnitVersion{1, Version{1, 500}}, UnitVersion{2, Version{2, 600}}};
  StoreBatch batch;
  EXPECT_TRUE(MayBeUndoneByPowerCut(state, batch));
  batch.knowledge = Knowledge(ClockVector{{0, 100}, {1, 500}});
  batch.tick = 600;
  batch.upserts.push_back(learned);
  EXPECT_TRUE(MayBeUndoneByPowerCut(state, batch));

  // Versions of its own it issued before (at or below its tick) are kept,
  // not issued.
  batch.upserts[0].created = Version{0, 100};
  EXPECT_TRUE(MayBeUndoneByPowerCut(state, batch));

  // Issued now, wherever the version is.
  for (int where = 0; where < 3; ++where) {
    StoreBatch issuing = batch;
    ItemMetadata& item = issuing.upserts[0];
    Version issued{0, 101};
    if (where == 0) item.created = issued;
    if (where == 1) item.updated = issued;
    if (where == 2) item.units[1].version = issued;
    EXPECT_FALSE(MayBeUndoneByPowerCut(state, issuing)) << where;
  }
  // Another replica's tick above this one's is not this replica's version.
  batch.upserts[0].updated = Version{3, 1'000};
  EXPECT_TRUE(MayBeUndoneByPowerCut(state, batch));

  StoreBatch conflict = batch;
  conflict.new_conflicts.push_back(ConflictRecord{});
  EXPECT_FALSE(MayBeUndoneByPowerCut(state, conflict));
}

// A VFS over the default one that counts the syncs of files whose names end
// in "-wal", so a test can see which commits wait for the device.
class CountingVfs {
 public:
  CountingVfs() {
    base_ = sqlite3_vfs_find(nullptr);
    vfs_ = *base_;
    vfs_.zName = "meshsync-counting";
    vfs_.szOsFile = static_cast<int>(sizeof(File)) + base_->szOsFile;
    vfs_.pAppData = this;
    vfs_.xOpen = &Open;
    methods_ = {};
    sqlite3_vfs_register(&vfs_, /*makeDflt=*/1);
  }
  ~CountingVfs() {
    sqlite3_vfs_register(base_, 1);
    sqlite3_vfs_unregister(&vfs_);
  }
  int log_syncs() const { return log_syncs_.load(); }
  void Reset() { log_syncs_ = 0; }

 private:
  struct File {
    sqlite3_file base;  // pMethods: methods_ (once the real file is open)
    CountingVfs* vfs;
    bool log;
    sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(this + 1); }
  };

  static int Open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* opened, int flags,
                  int* out_flags) {
    auto* self = static_cast<CountingVfs*>(vfs->pAppData);
    auto* f = reinterpret_cast<File*>(opened);
    f->base.pMethods = nullptr;
    f->vfs = self;
    f->log = name != nullptr && std::string_view(name).ends_with("-wal");
    int rc = self->base_->xOpen(self->base_, name, f->real(), flags, out_flags);
    if (rc != SQLITE_OK || f->real()->pMethods == nullptr) return rc;
    std::call_once(self->methods_once_, [&] {
      self->methods_ = *f->real()->pMethods;
      self->methods_.xClose = [](sqlite3_file* p) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xClose(file->real());
      };
      self->methods_.xRead = [](sqlite3_file* p, void* b, int n, sqlite3_int64 o) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xRead(file->real(), b, n, o);
      };
      self->methods_.xWrite = [](sqlite3_file* p, const void* b, int n, sqlite3_int64 o) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xWrite(file->real(), b, n, o);
      };
      self->methods_.xTruncate = [](sqlite3_file* p, sqlite3_int64 size) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xTruncate(file->real(), size);
      };
      self->methods_.xSync = [](sqlite3_file* p, int sync_flags) {
        File* file = reinterpret_cast<File*>(p);
        if (file->log) file->vfs->log_syncs_.fetch_add(1);
        return file->real()->pMethods->xSync(file->real(), sync_flags);
      };
      self->methods_.xFileSize = [](sqlite3_file* p, sqlite3_int64* size) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xFileSize(file->real(), size);
      };
      self->methods_.xLock = [](sqlite3_file* p, int lock) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xLock(file->real(), lock);
      };
      self->methods_.xUnlock = [](sqlite3_file* p, int lock) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xUnlock(file->real(), lock);
      };
      self->methods_.xCheckReservedLock = [](sqlite3_file* p, int* out) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xCheckReservedLock(file->real(), out);
      };
      self->methods_.xFileControl = [](sqlite3_file* p, int op, void* arg) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xFileControl(file->real(), op, arg);
      };
      self->methods_.xSectorSize = [](sqlite3_file* p) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xSectorSize(file->real());
      };
      self->methods_.xDeviceCharacteristics = [](sqlite3_file* p) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xDeviceCharacteristics(file->real());
      };
      self->methods_.xShmMap = [](sqlite3_file* p, int page, int size, int extend,
                                  void volatile** out) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xShmMap(file->real(), page, size, extend, out);
      };
      self->methods_.xShmLock = [](sqlite3_file* p, int offset, int n, int lock_flags) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xShmLock(file->real(), offset, n, lock_flags);
      };
      self->methods_.xShmBarrier = [](sqlite3_file* p) {
        File* file = reinterpret_cast<File*>(p);
        file->real()->pMethods->xShmBarrier(file->real());
      };
      self->methods_.xShmUnmap = [](sqlite3_file* p, int remove) {
        File* file = reinterpret_cast<File*>(p);
        return file->real()->pMethods->xShmUnmap(file->real(), remove);
      };
      // Memory-mapped I/O is left off: these files do not map.
      self->methods_.iVersion = 2;
      self->methods_.xFetch = nullptr;
      self->methods_.xUnfetch = nullptr;
    });
    f->base.pMethods = &self->methods_;
    return rc;
  }

  sqlite3_vfs* base_ = nullptr;
  sqlite3_vfs vfs_;
  sqlite3_io_methods methods_;
  std::once_flag methods_once_;
  std::atomic<int> log_syncs_{0};
};

// A batch of `count` items whose every version was learned from replica 1:
// nothing a power cut may not undo.
StoreBatch LearnedBatch(const MetadataStore& store, uint64_t first, int count, Tick tick) {
  StoreBatch batch;
  ReplicaKeyMap keys = store.state().keys;
  EXPECT_EQ(keys.KeyFor(ReplicaId(Id128{9, 9})), 1u);
  batch.keys = std::move(keys);
  for (int n = 0; n < count; ++n) {
    ItemMetadata item;
    item.id = ItemId(0, first + static_cast<uint64_t>(n));
    item.created = Version{1, tick};
    item.updated = Version{1, tick};
    item.units = {UnitVersion{1, Version{1, tick}}};
    batch.upserts.push_back(std::move(item));
  }
  batch.knowledge = Knowledge(ClockVector{{1, tick}});
  return batch;
}

// With StoreDurability::kOwnVersions, only commits that must outlive a
// power cut sync the log: versions of the replica's own and conflicts, not
// versions learned from a peer. With kEveryCommit every commit does.
TEST(SqliteStoreTest, OwnVersionsDurabilitySyncsOnlyWhatMustOutliveAPowerCut) {
  CountingVfs vfs;
  TempDir dir;
  testing::SeededRandom random(11);
  auto opened = OpenSqliteStore(dir.File("own.db"), "files", random, StoreDurability::kOwnVersions);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  MetadataStore& store = **opened;

  StoreBatch own;
  own.upserts.push_back(Item(1, "own", 10));  // created by replica 0 at tick 10
  own.tick = 10;
  vfs.Reset();
  ASSERT_TRUE(store.Commit(own).ok());
  EXPECT_GT(vfs.log_syncs(), 0);

  vfs.Reset();
  ASSERT_TRUE(store.Commit(LearnedBatch(store, 100, 20, 50)).ok());
  ASSERT_TRUE(store.CommitInBackground(LearnedBatch(store, 200, 20, 60)).ok());
  ASSERT_TRUE(store.Flush().ok());
  EXPECT_EQ(vfs.log_syncs(), 0);

  StoreBatch conflict = LearnedBatch(store, 300, 1, 70);
  conflict.new_conflicts.push_back(ConflictRecord{});
  conflict.new_conflicts.back().item = ItemId(0, 300);
  vfs.Reset();
  ASSERT_TRUE(store.Commit(conflict).ok());
  EXPECT_GT(vfs.log_syncs(), 0);

  // All of it is there, and stays there across a reopen.
  opened->reset();
  auto reopened =
      OpenSqliteStore(dir.File("own.db"), "files", random, StoreDurability::kOwnVersions);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(*(*reopened)->CountItems(), 42u);
  EXPECT_EQ((*reopened)->ListConflicts()->size(), 1u);
  reopened->reset();

  auto every = OpenSqliteStore(dir.File("every.db"), "files", random);
  ASSERT_TRUE(every.ok()) << every.status().ToString();
  vfs.Reset();
  ASSERT_TRUE((*every)->Commit(LearnedBatch(**every, 100, 20, 50)).ok());
  EXPECT_GT(vfs.log_syncs(), 0);
}

// A commit that finds the whole log copied into the database would start
// it over, and SQLite syncs a log that starts over. With kOwnVersions a
// commit that need not be durable does not: it adds to the log.
TEST(SqliteStoreTest, OwnVersionsDurabilityDoesNotStartTheLogOverUnsynced) {
  CountingVfs vfs;
  TempDir dir;
  std::string path = dir.File("m.db");
  testing::SeededRandom random(12);
  auto opened = OpenSqliteStore(path, "files", random, StoreDurability::kOwnVersions);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  MetadataStore& store = **opened;
  ASSERT_TRUE(store.Commit(LearnedBatch(store, 1, 20, 50)).ok());

  // Copy all of the log into the database, as the store's own checkpoints
  // do in the background.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  // Reads first: a connection learns that the store is in WAL mode as it
  // reads.
  ASSERT_EQ(sqlite3_exec(other, "SELECT 1 FROM sqlite_schema", nullptr, nullptr, nullptr),
            SQLITE_OK);
  int log = -1;
  int copied = -1;
  ASSERT_EQ(sqlite3_wal_checkpoint_v2(other, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &copied),
            SQLITE_OK);
  sqlite3_close(other);
  EXPECT_GT(log, 0);
  EXPECT_EQ(copied, log);

  vfs.Reset();
  ASSERT_TRUE(store.Commit(LearnedBatch(store, 100, 20, 60)).ok());
  EXPECT_EQ(vfs.log_syncs(), 0);
  EXPECT_EQ(*store.CountItems(), 40u);
}

}  // namespace
}  // namespace meshsync
