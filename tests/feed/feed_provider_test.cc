// FeedProvider through the engine: a feed syncs with a record store and
// with another feed; edits of different elements merge; the FeedSync
// histories of two synced feeds agree; deletions become tombstones.
#include "feed/feed_provider.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "memory/record_provider.h"
#include "meshsync/metadata_store.h"
#include "meshsync/sync.h"

namespace meshsync::feedsync {
namespace {

namespace fs = std::filesystem;

class ManualClock : public Clock {
 public:
  uint64_t NowMillis() override { return now += 1000; }
  uint64_t now = 1'200'000'000'000;
};

Timestamp At(int64_t seconds) { return Timestamp{seconds, 0}; }

struct FeedReplica {
  FeedReplica(const std::string& path, const std::string& by, Format format, ManualClock& clock)
      : store(OpenMemoryStore(ReplicaId(Id128{clock.now, ++counter}), "feedsync")),
        provider(path, by, format, clock) {
    replica = std::move(*Replica::Open(*store, provider, clock));
  }
  static inline uint64_t counter = 0;
  std::unique_ptr<MetadataStore> store;
  FeedProvider provider;
  std::unique_ptr<Replica> replica;
};

class FeedProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("feed_provider_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) { return (dir_ / name).string(); }

  // Edits a feed file as a FeedSync endpoint would, outside meshsync.
  void Edit(const std::string& path, const std::function<void(Feed&)>& edit) {
    Feed feed = Feed::New(Format::kAtom, "f");
    if (fs::exists(path)) {
      auto read = ReadFeedFile(path);
      ASSERT_TRUE(read.ok()) << read.status().ToString();
      feed = std::move(*read);
    }
    edit(feed);
    ASSERT_TRUE(WriteFeedFile(feed, path).ok());
  }

  Feed Read(const std::string& path) {
    auto feed = ReadFeedFile(path);
    EXPECT_TRUE(feed.ok()) << feed.status().ToString();
    return feed.ok() ? std::move(*feed) : Feed{};
  }

  static void AddItem(Feed& feed, const std::string& id, const std::string& title,
                      const std::string& by, int64_t when) {
    Item item;
    item.element.name = feed.format == Format::kAtom
                            ? xml::Name{std::string(kAtomNamespace), "entry", ""}
                            : xml::Name{"", "item", ""};
    ASSERT_TRUE(SetItemField(item, feed.format, "title", &title).ok());
    ASSERT_TRUE(Create(item, id, by, At(when)).ok());
    feed.items.push_back(std::move(item));
  }

  static void SetField(Feed& feed, const std::string& id, const std::string& name,
                       const std::string& value, const std::string& by, int64_t when) {
    Item* item = feed.Find(id);
    ASSERT_NE(item, nullptr);
    ASSERT_TRUE(SetItemField(*item, feed.format, name, &value).ok());
    ASSERT_TRUE(Update(*item, by, At(when)).ok());
  }

  static void Sync(FeedReplica& a, FeedReplica& b) {
    auto report = Synchronize(*a.replica, *b.replica);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->a_to_b.errors.empty());
    EXPECT_TRUE(report->b_to_a.errors.empty());
  }

  static std::map<std::string, std::string> Fields(const Feed& feed, const std::string& id) {
    const Item* item = feed.Find(id);
    EXPECT_NE(item, nullptr) << id;
    return item ? ItemFields(*item, feed.format) : std::map<std::string, std::string>{};
  }

  fs::path dir_;
  ManualClock clock_;
};

TEST_F(FeedProviderTest, TwoFeedsSyncAndAgreeOnFeedSyncHistory) {
  std::string a_path = Path("a.atom"), b_path = Path("b.atom");
  Edit(a_path, [](Feed&) {});  // a missing file is an empty feed; make one
  FeedReplica a(a_path, "laptop", Format::kAtom, clock_);
  FeedReplica b(b_path, "phone", Format::kAtom, clock_);
  Edit(a_path, [](Feed& feed) {
    feed = Feed::New(Format::kAtom, "a");
    AddItem(feed, "milk", "Buy milk", "laptop", 100);
  });
  Sync(a, b);
  ASSERT_TRUE(fs::exists(b_path));
  EXPECT_EQ(Fields(Read(b_path), "milk").at("title"), "Buy milk");

  // Different elements edited on each side: both edits survive.
  Edit(a_path, [](Feed& feed) { SetField(feed, "milk", "title", "Buy oat milk", "laptop", 200); });
  Edit(b_path, [](Feed& feed) { SetField(feed, "milk", "content", "two litres", "phone", 201); });
  Sync(a, b);
  Sync(a, b);  // the version written by the merge spreads
  for (const std::string& path : {a_path, b_path}) {
    auto fields = Fields(Read(path), "milk");
    EXPECT_EQ(fields.at("title"), "Buy oat milk") << path;
    EXPECT_EQ(fields.at("content"), "two litres") << path;
  }
  // Both files hold the same FeedSync version: merging them directly, as a
  // FeedSync reader would, finds nothing new and no conflict.
  Feed merged = Read(a_path);
  auto stats = Merge(merged, Read(b_path));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->conflicts, 0u);
  EXPECT_EQ(stats->unchanged, 1u);
}

TEST_F(FeedProviderTest, FeedSyncsWithARecordStore) {
  std::string path = Path("todo.rss");
  ManualClock clock;
  FeedReplica feed(path, "feed-ep", Format::kRss, clock);
  auto record_store = OpenMemoryStore(ReplicaId(Id128{7, 7}), "memory-records");
  RecordProvider records;
  auto record_replica = std::move(*Replica::Open(*record_store, records, clock));

  ItemId call{1, 2};
  records.Put(call, "title", "Call mum");
  records.Put(call, "description", "about Sunday");
  auto report = Synchronize(*record_replica, *feed.replica);
  ASSERT_TRUE(report.ok());
  Feed written = Read(path);
  ASSERT_EQ(written.items.size(), 1u);
  const Item& item = written.items[0];
  EXPECT_EQ(item.sync.id, "meshsync-" + call.ToHex());
  EXPECT_EQ(ItemFields(item, Format::kRss).at("description"), "about Sunday");
  EXPECT_EQ(*item.sync.topmost().by, "feed-ep");

  // An edit in the feed reaches the record; so does a deletion.
  Edit(path,
       [](Feed& f) { SetField(f, f.items[0].sync.id, "title", "Call mum today", "tablet", 300); });
  ASSERT_TRUE(Synchronize(*record_replica, *feed.replica).ok());
  EXPECT_EQ(records.Get(call)->at("title"), "Call mum today");
  records.Erase(call);
  ASSERT_TRUE(Synchronize(*record_replica, *feed.replica).ok());
  written = Read(path);
  ASSERT_EQ(written.items.size(), 1u);
  EXPECT_TRUE(written.items[0].sync.deleted) << "a deletion leaves a tombstone";
}

TEST_F(FeedProviderTest, ItemRemovedByHandIsDeletedElsewhere) {
  std::string a_path = Path("a.atom"), b_path = Path("b.atom");
  FeedReplica a(a_path, "a", Format::kAtom, clock_);
  FeedReplica b(b_path, "b", Format::kAtom, clock_);
  Edit(b_path, [](Feed&) {});
  Edit(a_path, [](Feed& feed) {
    feed = Feed::New(Format::kAtom, "a");
    AddItem(feed, "x", "one", "a", 100);
    AddItem(feed, "y", "two", "a", 100);
  });
  Sync(a, b);
  ASSERT_EQ(Read(b_path).items.size(), 2u);
  Edit(a_path, [](Feed& feed) { feed.items.erase(feed.items.begin()); });
  Sync(a, b);
  EXPECT_TRUE(Read(b_path).Find("x")->sync.deleted);
  EXPECT_FALSE(Read(b_path).Find("y")->sync.deleted);
}

TEST_F(FeedProviderTest, ConcurrentEditsOfOneElementKeepOneValueEverywhere) {
  std::string a_path = Path("a.atom"), b_path = Path("b.atom");
  FeedReplica a(a_path, "a", Format::kAtom, clock_);
  FeedReplica b(b_path, "b", Format::kAtom, clock_);
  Edit(b_path, [](Feed&) {});
  Edit(a_path, [](Feed& feed) {
    feed = Feed::New(Format::kAtom, "a");
    AddItem(feed, "x", "v1", "a", 100);
  });
  Sync(a, b);
  Edit(a_path, [](Feed& feed) { SetField(feed, "x", "title", "from a", "a", 200); });
  Edit(b_path, [](Feed& feed) { SetField(feed, "x", "title", "from b", "b", 201); });
  Sync(a, b);
  std::string a_title = Fields(Read(a_path), "x").at("title");
  EXPECT_EQ(a_title, Fields(Read(b_path), "x").at("title"));
  EXPECT_TRUE(a_title == "from a" || a_title == "from b");
  // The loser is in the conflict log.
  auto conflicts = a.store->ListConflicts();
  auto conflicts_b = b.store->ListConflicts();
  ASSERT_TRUE(conflicts.ok() && conflicts_b.ok());
  EXPECT_GE(conflicts->size() + conflicts_b->size(), 1u);
}

TEST_F(FeedProviderTest, FileChangedDuringSyncIsNotOverwritten) {
  std::string a_path = Path("a.atom"), b_path = Path("b.atom");
  FeedReplica a(a_path, "a", Format::kAtom, clock_);
  FeedReplica b(b_path, "b", Format::kAtom, clock_);
  Edit(a_path, [](Feed& feed) {
    feed = Feed::New(Format::kAtom, "a");
    AddItem(feed, "x", "v1", "a", 100);
  });
  Edit(b_path, [](Feed&) {});
  ASSERT_TRUE(b.replica->DetectChanges().ok());
  // Someone writes b between detection and the commit of the sync.
  Edit(b_path, [](Feed& feed) { AddItem(feed, "z", "written meanwhile", "other", 150); });
  SyncOptions options;
  options.detect_changes = false;
  options.direction = SyncDirection::kAToB;
  ASSERT_TRUE(a.replica->DetectChanges().ok());
  auto report = Synchronize(*a.replica, *b.replica, options);
  EXPECT_FALSE(report.ok());
  EXPECT_NE(Read(b_path).Find("z"), nullptr) << "the concurrent write survives";
  Sync(a, b);  // and the next sync completes
  EXPECT_NE(Read(b_path).Find("x"), nullptr);
  EXPECT_NE(Read(a_path).Find("z"), nullptr);
}

TEST(FeedFields, ElementsMapToFieldsAndBack) {
  auto feed = ParseFeed(
      "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:sx='http://feedsync.org/2007/feedsync' "
      "xmlns:x='urn:x'><title>t</title><entry><title>T</title>"
      "<link rel='alternate' href='http://a/'/><link rel='self' href='http://b/'/>"
      "<x:prio>2</x:prio><sx:sync id='i' updates='1'><sx:history sequence='1' by='e'/>"
      "</sx:sync></entry></feed>");
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  auto fields = ItemFields(feed->items[0], Format::kAtom);
  EXPECT_EQ(fields.at("title"), "T");
  EXPECT_EQ(fields.at("{urn:x}prio"), "2");
  ASSERT_TRUE(fields.contains("link#xml"));
  // Setting the fields on an empty entry rebuilds the same elements.
  Item copy;
  copy.element.name = feed->items[0].element.name;
  for (const auto& [name, value] : fields) {
    ASSERT_TRUE(SetItemField(copy, Format::kAtom, name, &value).ok()) << name;
  }
  EXPECT_EQ(ItemFields(copy, Format::kAtom), fields);
  // Names and values that cannot be elements are refused.
  std::string value = "v";
  EXPECT_FALSE(SetItemField(copy, Format::kAtom, "bad name", &value).ok());
  EXPECT_FALSE(
      SetItemField(copy, Format::kAtom, "{http://feedsync.org/2007/feedsync}sync", &value).ok());
  std::string control("a\x01", 2);
  EXPECT_FALSE(SetItemField(copy, Format::kAtom, "title", &control).ok());
  std::string not_xml = "<link";
  EXPECT_FALSE(SetItemField(copy, Format::kAtom, "link#xml", &not_xml).ok());
  std::string wrong = "<title>x</title>";
  EXPECT_FALSE(SetItemField(copy, Format::kAtom, "link#xml", &wrong).ok());
}

}  // namespace
}  // namespace meshsync::feedsync
