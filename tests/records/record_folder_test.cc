// RecordFolderProvider: the record file format keeps every value byte for
// byte and refuses what it cannot carry; a folder of record files syncs
// through the engine with a feed, both ways: records arrive as files, hand
// edits of a file travel as FeedSync updates, edits of different fields
// merge, deletes and new files spread, a file that is not a record is left
// alone and never taken for a deletion.
#include "records/record_folder.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "feed/feed_provider.h"
#include "meshsync/metadata_store.h"
#include "meshsync/record.h"
#include "meshsync/sync.h"

namespace meshsync {
namespace {

namespace fs = std::filesystem;

TEST(RecordFields, HashOfAFieldIsTheHashOfItsEncoding) {
  std::string binary("a\0b\xff", 4);
  for (auto [name, value] : {std::pair<std::string, std::string>{"email", "ann@example.org"},
                             {"n", ""},
                             {"blob", binary}}) {
    EXPECT_EQ(FieldHashOf(name, value), FieldHash(EncodeField(name, value)));
  }
  EXPECT_NE(FieldHashOf("ab", "c"), FieldHashOf("a", "bc"));
}

TEST(RecordFields, HashesKeepUnitOrderAndRoundTrip) {
  FieldHashes hashes;
  hashes[30] = 3;
  hashes[10] = 1;
  hashes[20] = 2;
  hashes[10] = 11;  // overwrites
  ASSERT_EQ(hashes.size(), 3u);
  std::vector<ChangeUnitId> order;
  for (const auto& [unit, hash] : hashes) order.push_back(unit);
  EXPECT_EQ(order, (std::vector<ChangeUnitId>{10, 20, 30}));
  EXPECT_EQ(hashes.find(10)->second, 11u);
  EXPECT_EQ(hashes.find(15), hashes.end());
  EXPECT_TRUE(hashes.contains(30));
  EXPECT_EQ(DecodeFieldHashes(EncodeFieldHashes(hashes)), hashes);
  // A trailing partial pair is ignored.
  EXPECT_EQ(DecodeFieldHashes(EncodeFieldHashes(hashes) + "xyz"), hashes);
}

TEST(RecordFields, ChangedUnitsAreTheChangedTheAddedAndTheRemoved) {
  FieldHashes before, now;
  before[10] = 1;  // same in both
  before[20] = 2;  // changed
  before[30] = 3;  // removed
  before[50] = 5;  // removed, after the last of `now`
  now[5] = 9;      // added, before the first of `before`
  now[10] = 1;
  now[20] = 22;
  now[40] = 4;  // added
  EXPECT_EQ(ChangedUnits(before, now), (std::vector<ChangeUnitId>{5, 20, 30, 40, 50}));
  EXPECT_EQ(ChangedUnits(FieldHashes(), now), (std::vector<ChangeUnitId>{5, 10, 20, 40}));
  EXPECT_EQ(ChangedUnits(before, FieldHashes()), (std::vector<ChangeUnitId>{10, 20, 30, 50}));
  EXPECT_TRUE(ChangedUnits(now, now).empty());
}

TEST(RecordFileFormat, EveryValueRoundTripsByteForByte) {
  const std::string binary("\x00\x01\xff\r\n \n\n", 8);
  RecordFields fields = {
      {"title", "Buy milk"},
      {"empty", ""},
      {"lines", "one\ntwo\n\nfour\n"},
      {"newline", "\n"},
      {"spaces", "  leading and trailing  "},
      {"colon", ": looks like a field: yes"},
      {"crlf", "a\r\nb\r\n"},
      {"binary", binary},
      {"{http://example.com/ns: with colon}tag", "x"},
      {"ends:", ""},
      {"ends2:", "value"},
      {"#xml", "<a>\n  <b/>\n</a>"},
  };
  auto text = FormatRecordFile(fields);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  auto parsed = ParseRecordFile(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, fields);
  // And it reads the way a person would write it.
  EXPECT_EQ(text->substr(0, 30), "title: Buy milk\nempty:\nlines: ");
}

TEST(RecordFileFormat, HandWrittenFilesParse) {
  auto parsed =
      ParseRecordFile("title: Call mum\n\nnotes: about Sunday\n and Monday\nlast: no newline");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  RecordFields expected = {
      {"title", "Call mum"}, {"notes", "about Sunday\nand Monday"}, {"last", "no newline"}};
  EXPECT_EQ(*parsed, expected);
}

TEST(RecordFileFormat, WhatItCannotCarryIsRefused) {
  for (std::string name : {"", "a: b", " lead", "two\nlines", "{open: x"}) {
    auto text = FormatRecordFile({{name, "v"}});
    EXPECT_FALSE(text.ok()) << "name \"" << name << "\"";
    if (!text.ok()) {
      EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
    }
  }
  struct Bad {
    std::string text;
    std::string error;
  };
  for (const Bad& bad : std::vector<Bad>{
           {" continued before a field\n", "line 1: a continuation line"},
           {"title: x\nno colon here\n", "line 2: not \"NAME: VALUE\""},
           {"title: x\ntitle: y\n", "line 2: field \"title\" again"},
           {"{never closed: x\n", "line 1: a { without its }"},
           {": no name\n", "line 1: a field without a name"},
       }) {
    auto parsed = ParseRecordFile(bad.text);
    ASSERT_FALSE(parsed.ok()) << bad.text;
    EXPECT_NE(parsed.status().message().find(bad.error), std::string_view::npos)
        << parsed.status().ToString();
  }
}

class ManualClock : public Clock {
 public:
  uint64_t NowMillis() override { return now += 1000; }
  uint64_t now = 1'200'000'000'000;
};

class RecordFolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("record_folder_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "notes");
    feed_path_ = (root_ / "list.atom").string();
    dir_ = (root_ / "notes").string();
    feed_store_ = OpenMemoryStore(ReplicaId(Id128{1, 1}), "feedsync");
    folder_store_ = OpenMemoryStore(ReplicaId(Id128{2, 2}), "record-folder");
    feed_ = std::make_unique<feedsync::FeedProvider>(feed_path_, "laptop", feedsync::Format::kAtom,
                                                     clock_);
    folder_ = std::make_unique<RecordFolderProvider>(dir_);
    feed_replica_ = std::move(*Replica::Open(*feed_store_, *feed_, clock_));
    folder_replica_ = std::move(*Replica::Open(*folder_store_, *folder_, clock_));
  }
  void TearDown() override { fs::remove_all(root_); }

  void Sync() {
    auto report = Synchronize(*feed_replica_, *folder_replica_);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->a_to_b.errors.empty());
    EXPECT_TRUE(report->b_to_a.errors.empty());
  }

  feedsync::Feed ReadFeed() {
    auto feed = feedsync::ReadFeedFile(feed_path_);
    EXPECT_TRUE(feed.ok()) << feed.status().ToString();
    return feed.ok() ? std::move(*feed) : feedsync::Feed{};
  }
  void EditFeed(const std::function<void(feedsync::Feed&)>& edit) {
    feedsync::Feed feed =
        fs::exists(feed_path_) ? ReadFeed() : feedsync::Feed::New(feedsync::Format::kAtom, "list");
    edit(feed);
    ASSERT_TRUE(feedsync::WriteFeedFile(feed, feed_path_).ok());
  }
  static void SetTitle(feedsync::Feed& feed, const std::string& id, const std::string& field,
                       const std::string& value, int64_t when) {
    feedsync::Item* item = feed.Find(id);
    if (item == nullptr) {
      feed.items.emplace_back();
      item = &feed.items.back();
      item->element.name = xml::Name{std::string(feedsync::kAtomNamespace), "entry", ""};
      ASSERT_TRUE(feedsync::SetItemField(*item, feed.format, field, &value).ok());
      ASSERT_TRUE(feedsync::Create(*item, id, "phone", feedsync::Timestamp{when, 0}).ok());
      return;
    }
    ASSERT_TRUE(feedsync::SetItemField(*item, feed.format, field, &value).ok());
    ASSERT_TRUE(feedsync::Update(*item, "phone", feedsync::Timestamp{when, 0}).ok());
  }

  // The record files in the folder: file name -> fields.
  std::map<std::string, RecordFields> Records() {
    std::map<std::string, RecordFields> out;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      auto fields = ParseRecordFile(text.str());
      EXPECT_TRUE(fields.ok()) << entry.path();
      if (fields.ok()) out[entry.path().filename().string()] = *fields;
    }
    return out;
  }
  static std::string Field(const RecordFields& fields, const std::string& name) {
    for (const auto& [n, v] : fields)
      if (n == name) return v;
    return "<none>";
  }
  // The file holding the feed item `sync_id`.
  std::string FileOf(const std::string& sync_id) {
    for (const auto& [name, fields] : Records()) {
      if (Field(fields, std::string(feedsync::kIdField)) == sync_id) return name;
    }
    return "";
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(fs::path(dir_) / name, std::ios::binary | std::ios::trunc) << text;
  }
  std::string Read(const std::string& name) {
    std::ifstream in(fs::path(dir_) / name, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  fs::path root_;
  std::string feed_path_, dir_;
  ManualClock clock_;
  std::unique_ptr<MetadataStore> feed_store_, folder_store_;
  std::unique_ptr<feedsync::FeedProvider> feed_;
  std::unique_ptr<RecordFolderProvider> folder_;
  std::unique_ptr<Replica> feed_replica_, folder_replica_;
};

TEST_F(RecordFolderTest, FeedItemsBecomeFilesAndHandEditsComeBack) {
  EditFeed([](feedsync::Feed& feed) {
    SetTitle(feed, "milk", "title", "Buy milk", 100);
    SetTitle(feed, "mum", "title", "Call mum", 100);
  });
  Sync();
  auto records = Records();
  ASSERT_EQ(records.size(), 2u);
  const std::string milk = FileOf("milk");
  ASSERT_FALSE(milk.empty());
  EXPECT_EQ(Field(records[milk], "title"), "Buy milk");
  EXPECT_TRUE(milk.ends_with(".txt"));

  // A person edits the file: the title line, and a new multi-line field.
  std::string text = Read(milk);
  size_t at = text.find("title: Buy milk");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 15, "title: Buy oat milk");
  Write(milk, text + "content: two litres\n and bread\n");
  Sync();
  feedsync::Feed feed = ReadFeed();
  auto fields = feedsync::ItemFields(*feed.Find("milk"), feed.format);
  EXPECT_EQ(fields.at("title"), "Buy oat milk");
  EXPECT_EQ(fields.at("content"), "two litres\nand bread");
  EXPECT_EQ(feed.Find("milk")->sync.updates, 2u) << "one FeedSync update for the hand edit";
  EXPECT_EQ(*feed.Find("milk")->sync.topmost().by, "laptop");

  // A new file is a new item; a removed file a FeedSync delete.
  Write("groceries", "title: Groceries\n");
  fs::remove(fs::path(dir_) / FileOf("mum"));
  Sync();
  feed = ReadFeed();
  EXPECT_TRUE(feed.Find("mum")->sync.deleted);
  bool found = false;
  for (const feedsync::Item& item : feed.items) {
    if (feedsync::ItemFields(item, feed.format)["title"] == "Groceries") found = !item.sync.deleted;
  }
  EXPECT_TRUE(found) << "the new file is not a live item of the feed";
}

TEST_F(RecordFolderTest, EditsOfDifferentFieldsMergeAndDeletesSpreadToFiles) {
  EditFeed([](feedsync::Feed& feed) { SetTitle(feed, "milk", "title", "Buy milk", 100); });
  Sync();
  const std::string milk = FileOf("milk");
  ASSERT_FALSE(milk.empty());
  // Concurrently: the feed's content, the file's title.
  EditFeed([](feedsync::Feed& feed) { SetTitle(feed, "milk", "content", "two litres", 200); });
  std::string text = Read(milk);
  text.replace(text.find("Buy milk"), 8, "Buy oat milk");
  Write(milk, text);
  Sync();
  Sync();  // the version the feed wrote for the merge spreads back
  EXPECT_EQ(Field(Records()[milk], "title"), "Buy oat milk");
  EXPECT_EQ(Field(Records()[milk], "content"), "two litres");
  feedsync::Feed feed = ReadFeed();
  auto fields = feedsync::ItemFields(*feed.Find("milk"), feed.format);
  EXPECT_EQ(fields.at("title"), "Buy oat milk");
  EXPECT_EQ(fields.at("content"), "two litres");

  // A field removed in the feed goes from the file; a delete removes it.
  EditFeed([](feedsync::Feed& edited) {
    feedsync::Item& item = *edited.Find("milk");
    ASSERT_TRUE(feedsync::SetItemField(item, edited.format, "content", nullptr).ok());
    ASSERT_TRUE(feedsync::Update(item, "phone", feedsync::Timestamp{300, 0}).ok());
  });
  Sync();
  EXPECT_EQ(Field(Records()[milk], "content"), "<none>");
  EditFeed([](feedsync::Feed& edited) {
    ASSERT_TRUE(feedsync::Delete(*edited.Find("milk"), "phone", feedsync::Timestamp{400, 0}).ok());
  });
  Sync();
  EXPECT_FALSE(fs::exists(fs::path(dir_) / milk));
  // Nothing is ever lost: the deleted record is in the trash.
  const fs::path trash = fs::path(dir_) / ".meshsync" / "trash";
  ASSERT_TRUE(fs::is_directory(trash));
  ASSERT_EQ(std::distance(fs::directory_iterator(trash), fs::directory_iterator()), 1);
  EXPECT_TRUE(fs::directory_iterator(trash)->path().filename().string().starts_with(milk + "."));
}

TEST_F(RecordFolderTest, AFileThatIsNotARecordIsLeftAloneAndNotDeletedElsewhere) {
  EditFeed([](feedsync::Feed& feed) { SetTitle(feed, "milk", "title", "Buy milk", 100); });
  Sync();
  const std::string milk = FileOf("milk");
  Write(milk, "this is not a record\n");
  Write("README", "some prose\n");
  Sync();
  ASSERT_EQ(folder_->problems().size(), 2u);
  EXPECT_NE(folder_->problems()[0].find("line 1: not \"NAME: VALUE\""), std::string::npos)
      << folder_->problems()[0];
  feedsync::Feed feed = ReadFeed();
  EXPECT_FALSE(feed.Find("milk")->sync.deleted) << "an unreadable file is not a deletion";
  EXPECT_EQ(feed.items.size(), 1u);
  EXPECT_EQ(Read(milk), "this is not a record\n") << "the broken file is not overwritten";
}

TEST_F(RecordFolderTest, AFileChangedSinceDetectionIsNeitherOverwrittenNorDeleted) {
  EditFeed([](feedsync::Feed& feed) { SetTitle(feed, "milk", "title", "Buy milk", 100); });
  Sync();
  const std::string milk = FileOf("milk");
  auto meta = folder_store_->FindByKey(milk);
  ASSERT_TRUE(meta.ok() && meta->has_value());
  // Written after detection (same size: only the content differs).
  std::string text = Read(milk);
  text.replace(text.find("Buy milk"), 8, "Buy rice");
  Write(milk, text);
  SaveRequest update{SaveAction::kUpdate, (*meta)->id, &**meta, {}, {}, {}};
  update.units.push_back(UnitData{ChangeUnitIdFromName("title"), EncodeField("title", "remote")});
  auto saved = folder_->SaveChange(update);
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.status().code(), StatusCode::kUnavailable);
  SaveRequest erase{SaveAction::kDelete, (*meta)->id, &**meta, {}, {}, {}};
  EXPECT_FALSE(folder_->SaveChange(erase).ok());
  EXPECT_EQ(Read(milk), text);
  // Removed after detection: an update does not bring back a partial file.
  fs::remove(fs::path(dir_) / milk);
  saved = folder_->SaveChange(update);
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(fs::exists(fs::path(dir_) / milk));
}

TEST_F(RecordFolderTest, AFileWrittenBeforeACrashIsTheSameItemAgain) {
  EditFeed([](feedsync::Feed& feed) { SetTitle(feed, "milk", "title", "Buy milk", 100); });
  Sync();
  const std::string milk = FileOf("milk");
  auto meta = folder_store_->FindByKey(milk);
  ASSERT_TRUE(meta.ok() && meta->has_value());
  EXPECT_EQ(milk, (*meta)->id.ToHex() + ".txt");
  // A fresh replica of the same folder (its metadata lost, as if the process
  // died before committing it) finds the file as the same item.
  auto store = OpenMemoryStore(ReplicaId(Id128{3, 3}), "record-folder");
  RecordFolderProvider provider(dir_);
  auto replica = std::move(*Replica::Open(*store, provider, clock_));
  ASSERT_TRUE(replica->DetectChanges().ok());
  auto again = store->FindByKey(milk);
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->id, (*meta)->id);
}

}  // namespace
}  // namespace meshsync
