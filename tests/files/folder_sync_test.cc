// Scenarios of two-way folder sync, each on fresh folders.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <ctime>

#include "files/chunker.h"
#include "files/copy.h"
#include "files/ignore.h"
#include "folder_fixture.h"
#include "meshsync/sync.h"

namespace meshsync::files::testing {
namespace {

TEST_F(FolderTest, InitialSyncCopiesFilesFoldersLinksAndModes) {
  WriteFile(a_ / "top.txt", "top");
  WriteFile(a_ / "docs/deep/note.md", "deep note");
  fs::create_directories(a_ / "empty/nested");
  fs::create_symlink("top.txt", a_ / "rel-link");
  fs::create_symlink("/etc/passwd", a_ / "outside-link");  // synced as a link, never followed
  chmod((a_ / "top.txt").c_str(), 0600);
  chmod((a_ / "docs").c_str(), 0750);
  WriteFile(b_ / "from-b.txt", "b's file");
  FolderSyncReport report = Sync();
  ExpectInSync();
  EXPECT_EQ(Snapshot(b_)["top.txt"], "F 600 top");
  EXPECT_EQ(Snapshot(b_)["docs"], "D 750");
  EXPECT_EQ(Snapshot(b_)["empty/nested"], "D 755");
  EXPECT_EQ(Snapshot(b_)["outside-link"], "L /etc/passwd");
  EXPECT_EQ(Snapshot(a_)["from-b.txt"], "F 644 b's file");
  EXPECT_EQ(report.a_to_b.engine.created, 8u);
  EXPECT_EQ(report.b_to_a.engine.created, 1u);

  // Nothing changed: nothing to do, nothing recorded.
  FolderSyncReport again = Sync();
  EXPECT_EQ(again.a_to_b.engine.created + again.a_to_b.engine.updated, 0u);
  EXPECT_EQ(again.b_to_a.engine.created + again.b_to_a.engine.updated, 0u);
  EXPECT_EQ(again.rounds, 1);
}

TEST_F(FolderTest, EditsDeletesAndTheTrash) {
  WriteFile(a_ / "keep.txt", "v1");
  WriteFile(a_ / "gone.txt", "precious");
  Sync();
  WriteFile(b_ / "keep.txt", "v2 from b");
  fs::remove(a_ / "gone.txt");
  FolderSyncReport report = Sync();
  ExpectInSync();
  EXPECT_EQ(ReadFile(a_ / "keep.txt"), "v2 from b");
  EXPECT_FALSE(fs::exists(b_ / "gone.txt"));
  EXPECT_EQ(report.a_to_b.engine.deleted, 1u);
  // The deleted file is in B's trash, the overwritten version in A's.
  std::vector<std::string> b_trash = TrashContents(b_);
  std::vector<std::string> a_trash = TrashContents(a_);
  EXPECT_EQ(b_trash, std::vector<std::string>{"precious"});
  EXPECT_EQ(a_trash, std::vector<std::string>{"v1"});
}

TEST_F(FolderTest, RenameOnOneSideEditOnTheOtherBothSurvive) {
  WriteFile(a_ / "draft.txt", "first");
  Sync();
  fs::rename(a_ / "draft.txt", a_ / "final.txt");
  WriteFile(b_ / "draft.txt", "first, edited");
  FolderSyncReport report = Sync();
  ExpectInSync();
  EXPECT_EQ(ReadFile(b_ / "final.txt"), "first, edited");
  EXPECT_FALSE(fs::exists(b_ / "draft.txt"));
  EXPECT_EQ(report.a_to_b.engine.conflicts + report.b_to_a.engine.conflicts, 0u);
  EXPECT_EQ(report.a_to_b.moved, 1u);
}

TEST_F(FolderTest, ConcurrentEditsKeepTheLoserAsAConflictCopyOnBothSides) {
  WriteFile(a_ / "report.txt", "base");
  Sync();
  WriteFile(a_ / "report.txt", "a's edit");
  WriteFile(b_ / "report.txt", "b's longer edit");
  FolderSyncReport report = Sync();
  ExpectInSync();
  std::vector<std::string> copies = ConflictCopies(a_);
  ASSERT_EQ(copies.size(), 1u);
  // report.conflict-YYYYMMDD-HHMMSS-REPLICA.txt
  const std::string& copy = copies[0];
  ASSERT_EQ(copy.size(), std::string("report.conflict-20261122-094218-14e1ef9.txt").size()) << copy;
  EXPECT_EQ(copy.substr(0, 16), "report.conflict-");
  EXPECT_TRUE(std::all_of(copy.begin() + 16, copy.begin() + 24, ::isdigit)) << copy;
  EXPECT_EQ(copy[24], '-');
  EXPECT_TRUE(std::all_of(copy.begin() + 25, copy.begin() + 31, ::isdigit)) << copy;
  EXPECT_EQ(copy[31], '-');
  EXPECT_TRUE(std::all_of(copy.begin() + 32, copy.begin() + 39, ::isxdigit)) << copy;
  EXPECT_EQ(copy.substr(39), ".txt");
  std::string winner = ReadFile(a_ / "report.txt");
  std::string loser = ReadFile(a_ / copies[0]);
  EXPECT_NE(winner, loser);
  EXPECT_TRUE((winner == "a's edit" && loser == "b's longer edit") ||
              (winner == "b's longer edit" && loser == "a's edit"));
  EXPECT_EQ(report.a_to_b.engine.conflicts + report.b_to_a.engine.conflicts, 1u);
  // The conflict is logged, naming the copy.
  auto b = Folder::Open(b_, {});
  ASSERT_TRUE(b.ok());
  auto log = (*b)->store().ListConflicts();
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 1u);
  ASSERT_TRUE((*b)->provider().LoadItems().ok());
  const ConflictRecord& c = (*log)[0];
  ReplicaId loser_id = (*b)->replica().state().keys.IdOf(c.loser.replica);
  EXPECT_EQ((*b)->provider().PathOf(ConflictCopyId(c.item, loser_id, c.loser.tick)), copies[0]);
  EXPECT_NE(copies[0].find(loser_id.ShortName()), std::string::npos);
}

TEST_F(FolderTest, AnEditBeatsAConcurrentDelete) {
  WriteFile(a_ / "x.txt", "base");
  Sync();
  fs::remove(a_ / "x.txt");
  WriteFile(b_ / "x.txt", "edited");
  Sync();
  ExpectInSync();
  EXPECT_EQ(ReadFile(a_ / "x.txt"), "edited");
}

TEST_F(FolderTest, AFileReplacedByAnIdenticalCopyIsNotAnEdit) {
  WriteFile(a_ / "x.txt", "base");
  Sync();
  // B's file is replaced by a copy with the same bytes and mtime (a backup
  // restored, `cp -p`): a new inode, nothing changed for the user.
  fs::copy_file(b_ / "x.txt", b_ / "copy.tmp");
  fs::last_write_time(b_ / "copy.tmp", fs::last_write_time(b_ / "x.txt"));
  fs::rename(b_ / "copy.tmp", b_ / "x.txt");
  WriteFile(a_ / "x.txt", "edited on a");
  FolderSyncReport report = Sync();
  ExpectInSync();
  EXPECT_EQ(ReadFile(b_ / "x.txt"), "edited on a");
  EXPECT_TRUE(ConflictCopies(a_).empty());
  EXPECT_EQ(report.a_to_b.engine.conflicts + report.b_to_a.engine.conflicts, 0u);
}

TEST_F(FolderTest, TwoNewFilesAtOnePathOneKeepsTheName) {
  WriteFile(a_ / "new.txt", "from a");
  WriteFile(b_ / "new.txt", "from b");
  WriteFile(a_ / "same.txt", "identical");
  WriteFile(b_ / "same.txt", "identical");
  // Same bytes, different mtimes: still no conflict.
  struct timespec times[2] = {{0, UTIME_OMIT}, {1600000000, 0}};
  utimensat(AT_FDCWD, (a_ / "same.txt").c_str(), times, 0);
  times[1].tv_sec = 1700000000;
  utimensat(AT_FDCWD, (b_ / "same.txt").c_str(), times, 0);
  FolderSyncReport report = Sync();
  ExpectInSync();
  std::vector<std::string> copies = ConflictCopies(a_);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].rfind("new.conflict-", 0), 0u);
  std::set<std::string> contents{ReadFile(a_ / "new.txt"), ReadFile(a_ / copies[0])};
  EXPECT_EQ(contents, (std::set<std::string>{"from a", "from b"}));
  EXPECT_EQ(ReadFile(a_ / "same.txt"), "identical");  // equal files: no conflict
  EXPECT_EQ(report.a_to_b.engine.conflicts + report.b_to_a.engine.conflicts, 1u);
}

TEST_F(FolderTest, FolderDeletedWhileAFileInsideWasEdited) {
  WriteFile(a_ / "proj/keep.c", "v1");
  WriteFile(a_ / "proj/other.c", "other");
  WriteFile(a_ / "proj/sub/deep.c", "deep");
  Sync();
  fs::remove_all(a_ / "proj");
  WriteFile(b_ / "proj/keep.c", "v2 edited");
  Sync();
  ExpectInSync();
  EXPECT_EQ(ReadFile(a_ / "proj/keep.c"), "v2 edited");
  EXPECT_FALSE(fs::exists(a_ / "proj/other.c"));
  EXPECT_FALSE(fs::exists(b_ / "proj/other.c"));
  EXPECT_FALSE(fs::exists(b_ / "proj/sub"));
  // A later sync has nothing left to do.
  FolderSyncReport again = Sync();
  EXPECT_EQ(again.a_to_b.engine.created + again.a_to_b.engine.updated +
                again.b_to_a.engine.created + again.b_to_a.engine.updated,
            0u);
}

TEST_F(FolderTest, RenamingAFolderOfManyFilesIsOneChange) {
  for (int i = 0; i < 1000; ++i)
    WriteFile(a_ / "photos" / ("p" + std::to_string(i)), "x" + std::to_string(i));
  Sync();
  fs::rename(a_ / "photos", a_ / "pictures");
  FolderSyncReport report = Sync();
  ExpectInSync();
  EXPECT_EQ(report.a_to_b.engine.updated, 1u);
  EXPECT_EQ(report.a_to_b.moved, 1u);
  EXPECT_EQ(report.a_to_b.bytes_copied, 0u);
  EXPECT_EQ(ReadFile(b_ / "pictures/p999"), "x999");
}

TEST_F(FolderTest, MovesIntoANewFolderAndAcrossFolders) {
  WriteFile(a_ / "inbox/a.txt", "a");
  WriteFile(a_ / "inbox/b.txt", "b");
  Sync();
  fs::create_directories(a_ / "archive/2026");
  fs::rename(a_ / "inbox/a.txt", a_ / "archive/2026/a.txt");
  fs::rename(a_ / "inbox/b.txt", a_ / "b-moved.txt");
  FolderSyncReport report = Sync();
  ExpectInSync();
  EXPECT_EQ(report.a_to_b.bytes_copied, 0u);
  EXPECT_EQ(ReadFile(b_ / "archive/2026/a.txt"), "a");
}

TEST_F(FolderTest, ConcurrentMovesThatWouldFormACycleAreBothUndone) {
  fs::create_directories(a_ / "x");
  fs::create_directories(a_ / "z");
  WriteFile(a_ / "x/in-x.txt", "x");
  Sync();
  fs::rename(a_ / "x", a_ / "z/x");  // A: x into z
  fs::rename(b_ / "z", b_ / "x/z");  // B: z into x
  Sync();
  ExpectInSync();
  EXPECT_TRUE(fs::is_directory(a_ / "x"));
  EXPECT_TRUE(fs::is_directory(a_ / "z"));
  EXPECT_EQ(ReadFile(b_ / "x/in-x.txt"), "x");
}

TEST_F(FolderTest, IgnorePatternsFromOptionsAndFile) {
  WriteFile(a_ / ".meshsyncignore", "*.tmp\nbuild/\n!keep.tmp\n");
  WriteFile(a_ / "x.tmp", "scratch");
  WriteFile(a_ / "keep.tmp", "kept");
  WriteFile(a_ / "build/out.o", "obj");
  WriteFile(a_ / "cache/blob", "cache");
  WriteFile(a_ / "src/main.c", "code");
  FolderOptions folder;
  folder.ignore = {"/cache"};
  Sync({}, folder);
  EXPECT_TRUE(fs::exists(b_ / "src/main.c"));
  EXPECT_TRUE(fs::exists(b_ / "keep.tmp"));
  EXPECT_TRUE(fs::exists(b_ / ".meshsyncignore"));
  EXPECT_FALSE(fs::exists(b_ / "x.tmp"));
  EXPECT_FALSE(fs::exists(b_ / "build"));
  EXPECT_FALSE(fs::exists(b_ / "cache"));
  // A file that becomes ignored is not deleted on the other side.
  WriteFile(a_ / "src/gen.c", "generated");
  Sync({}, folder);
  ASSERT_TRUE(fs::exists(b_ / "src/gen.c"));
  folder.ignore.push_back("gen.c");
  fs::remove(a_ / "src/gen.c");
  Sync({}, folder);
  EXPECT_TRUE(fs::exists(b_ / "src/gen.c"));
}

TEST_F(FolderTest, NamesThatAreNotUtf8ArePreservedByteForByte) {
  std::string name = "caf\xe9-latin1.txt";
  WriteFile(a_ / name, "bytes");
  Sync();
  ExpectInSync();
  EXPECT_EQ(ReadFile(b_ / name), "bytes");
}

TEST_F(FolderTest, PermissionBitsAndEditMerge) {
  WriteFile(a_ / "run.sh", "echo 1");
  Sync();
  chmod((a_ / "run.sh").c_str(), 0755);
  WriteFile(b_ / "run.sh", "echo 2");
  FolderSyncReport report = Sync();
  ExpectInSync();
  EXPECT_EQ(Snapshot(a_)["run.sh"], "F 755 echo 2");
  EXPECT_EQ(report.a_to_b.engine.conflicts + report.b_to_a.engine.conflicts, 0u);
}

TEST_F(FolderTest, PoliciesDecideConflictsWithoutCopies) {
  WriteFile(a_ / "f.txt", "base");
  Sync();
  WriteFile(a_ / "f.txt", "a wins");
  WriteFile(b_ / "f.txt", "b loses");
  FolderSyncOptions options;
  options.policy = FolderPolicy::kAWins;
  Sync(options);
  ExpectInSync();
  EXPECT_EQ(ReadFile(b_ / "f.txt"), "a wins");
  EXPECT_TRUE(ConflictCopies(a_).empty());
  // The loser is still in the trash.
  std::vector<std::string> trash = TrashContents(b_);
  EXPECT_NE(std::find(trash.begin(), trash.end(), "b loses"), trash.end());

  WriteFile(a_ / "f.txt", "a again");
  WriteFile(b_ / "f.txt", "b wins now");
  options.policy = FolderPolicy::kBWins;
  Sync(options);
  ExpectInSync();
  EXPECT_EQ(ReadFile(a_ / "f.txt"), "b wins now");

  WriteFile(a_ / "f.txt", "older");
  WriteFile(b_ / "f.txt", "newer");
  struct timespec times[2] = {{0, UTIME_OMIT}, {2000000000, 0}};
  utimensat(AT_FDCWD, (b_ / "f.txt").c_str(), times, 0);
  times[1].tv_sec = 1000000000;
  utimensat(AT_FDCWD, (a_ / "f.txt").c_str(), times, 0);
  options.policy = FolderPolicy::kNewer;
  Sync(options);
  ExpectInSync();
  EXPECT_EQ(ReadFile(a_ / "f.txt"), "newer");
}

TEST_F(FolderTest, PreviewChangesNothing) {
  WriteFile(a_ / "a.txt", "a");
  WriteFile(b_ / "b.txt", "b");
  Tree before_a = Snapshot(a_, true), before_b = Snapshot(b_, true);
  FolderOptions folder;
  folder.preview = true;
  auto a = Folder::Open(a_, folder);
  auto b = Folder::Open(b_, folder);
  ASSERT_TRUE(a.ok() && b.ok());
  auto report = SyncFolders(**a, **b, {});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(Snapshot(a_, true), before_a);
  EXPECT_EQ(Snapshot(b_, true), before_b);
  ASSERT_EQ((*b)->provider().actions().size(), 1u);
  EXPECT_EQ((*b)->provider().actions()[0].verb, "create");
  EXPECT_EQ((*b)->provider().actions()[0].path, "a.txt");
  // And after a real sync, a preview of a change.
  a->reset();
  b->reset();
  Sync();
  fs::remove(a_ / "a.txt");
  before_b = Snapshot(b_, true);
  auto a2 = Folder::Open(a_, folder);
  auto b2 = Folder::Open(b_, folder);
  ASSERT_TRUE(a2.ok() && b2.ok());
  ASSERT_TRUE(SyncFolders(**a2, **b2, {}).ok());
  EXPECT_EQ(Snapshot(b_, true), before_b);
  ASSERT_EQ((*b2)->provider().actions().size(), 1u);
  EXPECT_EQ((*b2)->provider().actions()[0].verb, "delete");
}

TEST_F(FolderTest, AFileEditedDuringTheSyncIsNotOverwritten) {
  WriteFile(a_ / "doc.txt", "v1");
  Sync();
  WriteFile(a_ / "doc.txt", "a's v2");
  ExpectAWriteDuringTheSyncKept("doc.txt", "a's v2", "b's edit during sync");
}

// A folder swapped for a link to elsewhere between B's scan and the writes
// into it: nothing is written through the link, whether paths are opened
// with openat2 or a component at a time (the no_openat2 run of this test).
TEST_F(FolderTest, AFolderSwappedForALinkDuringTheSyncIsNotWrittenThrough) {
  fs::create_directories(a_ / "d" / "sub");
  WriteFile(a_ / "d" / "f.txt", "v1");
  WriteFile(a_ / "d" / "sub" / "g.txt", "v1");
  Sync();
  WriteFile(a_ / "d" / "f.txt", "v2");
  WriteFile(a_ / "d" / "sub" / "g.txt", "v2");
  WriteFile(a_ / "d" / "new.txt", "new");
  auto a = Folder::Open(a_, {});
  auto b = Folder::Open(b_, {});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->replica().DetectChanges().ok());
  ASSERT_TRUE((*b)->replica().DetectChanges().ok());
  const fs::path outside = dir_ / "outside";
  fs::create_directories(outside / "sub");
  fs::rename(b_ / "d", dir_ / "moved-away");
  fs::create_directory_symlink(outside, b_ / "d");
  SyncOptions options;
  options.detect_changes = false;
  auto report = Synchronize((*a)->replica(), (*b)->replica(), options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->a_to_b.skipped, 3u);
  EXPECT_TRUE(fs::is_empty(outside / "sub"));
  EXPECT_EQ(std::distance(fs::directory_iterator(outside), fs::directory_iterator()), 1);
  EXPECT_EQ(ReadFile(dir_ / "moved-away" / "f.txt"), "v1");
  EXPECT_TRUE(fs::is_symlink(b_ / "d"));
}

// A new file goes straight to its place when it can (not through B's
// temporary folder): a name taken meanwhile is not overwritten either.
TEST_F(FolderTest, AFileMadeDuringTheSyncWhereANewOneArrivesIsNotOverwritten) {
  WriteFile(a_ / "new.txt", "a's new file");
  ExpectAWriteDuringTheSyncKept("new.txt", "a's new file", "b's file, made during the sync");
}

TEST_F(FolderTest, LargeFileEditsMoveOnlyTheirChunksAndStayExact) {
  std::string big(3 << 20, '\0');
  uint64_t x = 42;
  for (char& c : big) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    c = static_cast<char>(x >> 56);
  }
  WriteFile(a_ / "big.bin", big);
  Sync();
  big.replace(1 << 20, 5, "HELLO");
  WriteFile(a_ / "big.bin", big);
  Sync();
  ExpectInSync();
  EXPECT_EQ(ReadFile(b_ / "big.bin"), big);
}

TEST_F(FolderTest, RefusesMissingAndNestedFolders) {
  EXPECT_EQ(Folder::Open(dir_ / "missing", {}).status().code(), StatusCode::kNotFound);
  fs::create_directories(a_ / "inner");
  auto a = Folder::Open(a_, {});
  auto inner = Folder::Open(a_ / "inner", {});
  ASSERT_TRUE(a.ok() && inner.ok());
  EXPECT_FALSE(CheckPair(**a, **inner).ok());
  EXPECT_FALSE(CheckPair(**a, **a).ok());
  // Only one process syncs a folder at a time.
  EXPECT_EQ(Folder::Open(a_, {}).status().code(), StatusCode::kUnavailable);
}

TEST_F(FolderTest, UnsafeNamesFromMetadataAreRefused) {
  for (const std::string& bad :
       std::vector<std::string>{"", ".", "..", "a/b", std::string("nul\0x", 5)}) {
    EXPECT_FALSE(ValidName(bad)) << bad;
    ItemId parent;
    std::string name;
    EXPECT_FALSE(DecodePlacement(EncodePlacement(ItemId::Min(), bad), parent, name).ok()) << bad;
  }
  EXPECT_TRUE(ValidName("caf\xe9"));
  // A change naming "../x" is refused by the provider, and nothing is written.
  auto b = Folder::Open(b_, {});
  ASSERT_TRUE(b.ok());
  EntryState file;
  file.kind = Kind::kFile;
  SaveRequest request{SaveAction::kCreate, ItemId(1, 2), nullptr, {}, {}, {}};
  request.units.push_back(UnitData{kContentUnit, EncodeContent(file)});
  std::string placement = EncodePlacement(ItemId::Min(), "x");
  placement.replace(16, 1, "../x");
  request.units.push_back(UnitData{kPlacementUnit, placement});
  EXPECT_FALSE((*b)->provider().SaveChange(request).ok());
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

TEST(IgnoreRulesTest, GitignoreSyntax) {
  IgnoreRules rules;
  ASSERT_TRUE(rules
                  .Add("# comment\n*.log\n/root-only\ndocs/**/draft*\nbuild/\n!important.log\n"
                       "\\#hash\n[ab]?.txt\n",
                       "test")
                  .ok());
  EXPECT_TRUE(rules.Ignored("x.log", false));
  EXPECT_TRUE(rules.Ignored("deep/down/x.log", false));
  EXPECT_FALSE(rules.Ignored("important.log", false));
  EXPECT_TRUE(rules.Ignored("root-only", false));
  EXPECT_FALSE(rules.Ignored("sub/root-only", false));
  EXPECT_TRUE(rules.Ignored("docs/draft1", false));
  EXPECT_TRUE(rules.Ignored("docs/a/b/draft2", false));
  EXPECT_TRUE(rules.Ignored("build", true));
  EXPECT_FALSE(rules.Ignored("build", false));
  EXPECT_TRUE(rules.Ignored("#hash", false));
  EXPECT_TRUE(rules.Ignored("a1.txt", false));
  EXPECT_FALSE(rules.Ignored("c1.txt", false));
  EXPECT_FALSE(rules.Ignored("x.logger", false));
}

TEST(ChunkerTest, BoundariesFollowContentNotOffsets) {
  std::string data(2 << 20, '\0');
  uint64_t x = 7;
  for (char& c : data) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    c = static_cast<char>(x >> 56);
  }
  std::vector<Chunk> before;
  ChunkBuffer(reinterpret_cast<const uint8_t*>(data.data()), data.size(), before);
  std::string shifted = "inserted bytes" + data;
  std::vector<Chunk> after;
  ChunkBuffer(reinterpret_cast<const uint8_t*>(shifted.data()), shifted.size(), after);
  ASSERT_GT(before.size(), 8u);
  size_t shared = 0;
  for (const Chunk& c : after) shared += std::count(before.begin(), before.end(), c);
  EXPECT_GE(shared, before.size() - 2);  // an insertion changes the chunks around it only
  uint64_t total = 0;
  for (const Chunk& c : before) {
    if (&c != &before.back()) {
      EXPECT_GE(c.length, 16u << 10);
    }
    EXPECT_LE(c.length, 256u << 10);
    total += c.length;
  }
  EXPECT_EQ(total, data.size());
}

// A folder's provider as the source of a session whose bulk data is not a
// local file, as a peer's is: the destination then fetches, looking for the
// bytes in its own files first (FileProvider::FetchInto).
class RemoteLikeSource final : public Provider {
 public:
  explicit RemoteLikeSource(Provider& folder) : folder_(folder) {}
  uint64_t bytes_read() const { return bytes_read_; }

  std::string_view Name() const override { return folder_.Name(); }
  Status DetectChanges(ChangeRecorder& recorder) override {
    return folder_.DetectChanges(recorder);
  }
  Status ChangesRecorded() override { return folder_.ChangesRecorded(); }
  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override {
    return folder_.LoadChangeData(item, units, out);
  }
  Result<SaveResult> SaveChange(const SaveRequest&) override {
    return FailedPreconditionError("a source only");
  }
  Result<std::unique_ptr<DataReader>> OpenData(const ItemMetadata& item,
                                               ChangeUnitId unit) override {
    MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<DataReader> reader, folder_.OpenData(item, unit));
    return std::unique_ptr<DataReader>(std::make_unique<Reader>(std::move(reader), bytes_read_));
  }

 private:
  class Reader final : public DataReader {
   public:
    Reader(std::unique_ptr<DataReader> inner, uint64_t& bytes_read)
        : inner_(std::move(inner)), bytes_read_(bytes_read) {}
    uint64_t size() const override { return inner_->size(); }
    Status ReadAt(uint64_t offset, std::span<char> out) override {
      bytes_read_ += out.size();
      return inner_->ReadAt(offset, out);
    }
    Status Verify() override { return inner_->Verify(); }

   private:
    std::unique_ptr<DataReader> inner_;
    uint64_t& bytes_read_;
  };
  Provider& folder_;
  uint64_t bytes_read_ = 0;
};

std::string RandomBytes(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  for (char& c : out) {
    seed = seed * 1664525u + 1013904223u;
    c = static_cast<char>(seed >> 24);
  }
  return out;
}

// New files, large and small, are written side by side (one per core) before
// the batch is applied in order; each must arrive whole and exact, under its
// own name, whatever the order the threads took them in.
TEST_F(FolderTest, NewLargeAndSmallFilesInOneBatchArriveExact) {
  std::map<std::string, std::string> expected;
  for (int i = 0; i < 3; ++i) {
    expected["big" + std::to_string(i) + ".bin"] = RandomBytes((3u << 20) + 1000u * i, 10u + i);
  }
  expected["sub/huge.bin"] = RandomBytes(kDirectCopyMinBytes + (1u << 20) + 5, 20);
  for (int i = 0; i < 5; ++i)
    expected["sub/small" + std::to_string(i)] = RandomBytes(100u * i + 1, 30u + i);
  for (const auto& [name, bytes] : expected) WriteFile(a_ / name, bytes);
  FolderSyncReport report = Sync();
  EXPECT_EQ(report.a_to_b.engine.created, expected.size() + 1);  // and the folder
  uint64_t total = 0;
  for (const auto& [name, bytes] : expected) total += bytes.size();
  EXPECT_EQ(report.a_to_b.bytes_copied, total);
  for (const auto& [name, bytes] : expected) EXPECT_EQ(ReadFile(b_ / name), bytes) << name;
  ExpectInSync();
}

// An hour ago: a file written then is settled (its stat is trusted).
void BackdateMtime(const fs::path& p) {
  struct timespec times[2];
  clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= 3600;
  times[1] = times[0];
  ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
}

// A fetched file's bytes come from this folder's files where it has them:
// copied whole from a file whose stat says it is as it was indexed, and read
// and checked against their hashes from one that changed since.
TEST_F(FolderTest, AFetchCopiesBytesFromSettledFilesHereAndChecksTheRest) {
  const std::string old_big = RandomBytes(3u << 20, 1);
  WriteFile(a_ / "big.bin", old_big);
  BackdateMtime(a_ / "big.bin");
  Sync();
  ASSERT_TRUE(ReadFile(b_ / "big.bin") == old_big);

  auto a = Folder::Open(a_.string(), {});
  auto b = Folder::Open(b_.string(), {});
  ASSERT_TRUE(a.ok() && b.ok());
  RemoteLikeSource remote((*a)->provider());
  auto source = Replica::Open((*a)->store(), remote);
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  SyncOptions one_way;
  one_way.direction = SyncDirection::kAToB;

  // An edit of 4 KiB in the middle: the rest is B's own, copied.
  std::string new_big = old_big;
  for (size_t i = 0; i < 4096; ++i) new_big[(3u << 19) + i] ^= 0x5a;
  WriteFile(a_ / "big.bin", new_big);
  BackdateMtime(a_ / "big.bin");
  ASSERT_TRUE((*a)->replica().DetectChanges().ok());
  auto edited = Synchronize(**source, (*b)->replica(), one_way);
  ASSERT_TRUE(edited.ok()) << edited.status().ToString();
  EXPECT_EQ(edited->a_to_b.updated, 1u);
  EXPECT_TRUE(ReadFile(b_ / "big.bin") == new_big) << "B's big.bin differs";
  EXPECT_LE(remote.bytes_read(), 1u << 20);
  EXPECT_GE((*b)->provider().counters().bytes_reused, 2u << 20);

  // A copy of B's file under a new name, after B's file changed in place
  // where B has not looked yet: what changed there is fetched, not copied.
  WriteFile(a_ / "copy.bin", new_big);
  BackdateMtime(a_ / "copy.bin");
  ASSERT_TRUE((*a)->replica().DetectChanges().ok());
  {
    int fd = ::open((b_ / "big.bin").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::string junk(100000, 'j');
    ASSERT_EQ(pwrite(fd, junk.data(), junk.size(), 1u << 20), static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  uint64_t read_before = remote.bytes_read();
  SyncOptions no_scan = one_way;
  no_scan.detect_changes = false;
  auto copied = Synchronize(**source, (*b)->replica(), no_scan);
  ASSERT_TRUE(copied.ok()) << copied.status().ToString();
  EXPECT_EQ(copied->a_to_b.created, 1u);
  EXPECT_TRUE(ReadFile(b_ / "copy.bin") == new_big) << "B's copy.bin differs";
  EXPECT_GE(remote.bytes_read() - read_before, 100000u);
  EXPECT_LE(remote.bytes_read() - read_before, 1u << 20);
}

// Another folder, as a node's other folders are to a pull (the node's
// OtherFolderChunks does the same over snapshots).
class FolderChunks final : public ChunkFinder {
 public:
  explicit FolderChunks(FileProvider& folder) : folder_(folder) {}
  bool Has(const Chunk& chunk) override { return folder_.HasChunk(chunk); }
  bool Read(const Chunk& chunk, std::span<char> out) override {
    return folder_.ReadChunk(chunk, out);
  }

 private:
  FileProvider& folder_;
};

TEST_F(FolderTest, AFetchTakesChunksFromAnotherFolderAndChecksThem) {
  const fs::path c = dir_ / "C";
  fs::create_directories(c);
  const std::string album = RandomBytes(3u << 20, 7);
  WriteFile(c / "album.bin", album);
  BackdateMtime(c / "album.bin");
  auto other = Folder::Open(c.string(), {});
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->replica().DetectChanges().ok());
  FolderChunks elsewhere((*other)->provider());

  WriteFile(a_ / "copy.bin", album);
  BackdateMtime(a_ / "copy.bin");
  auto a = Folder::Open(a_.string(), {});
  auto b = Folder::Open(b_.string(), {});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->replica().DetectChanges().ok());
  RemoteLikeSource remote((*a)->provider());
  auto source = Replica::Open((*a)->store(), remote);
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  SyncOptions one_way;
  one_way.direction = SyncDirection::kAToB;
  (*b)->provider().set_chunk_finder(&elsewhere);
  auto copied = Synchronize(**source, (*b)->replica(), one_way);
  (*b)->provider().set_chunk_finder(nullptr);
  ASSERT_TRUE(copied.ok()) << copied.status().ToString();
  EXPECT_EQ(copied->a_to_b.created, 1u);
  EXPECT_TRUE(ReadFile(b_ / "copy.bin") == album) << "B's copy.bin differs";
  EXPECT_EQ(remote.bytes_read(), 0u);

  // The other folder's file changed where it has not looked yet: into a
  // folder that has none of it, what changed there is fetched, not taken.
  {
    int fd = ::open((c / "album.bin").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::string junk(100000, 'j');
    ASSERT_EQ(pwrite(fd, junk.data(), junk.size(), 1u << 20), static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  const fs::path d = dir_ / "D";
  fs::create_directories(d);
  auto fresh = Folder::Open(d.string(), {});
  ASSERT_TRUE(fresh.ok());
  (*fresh)->provider().set_chunk_finder(&elsewhere);
  const uint64_t read_before = remote.bytes_read();
  auto second = Synchronize(**source, (*fresh)->replica(), one_way);
  (*fresh)->provider().set_chunk_finder(nullptr);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->a_to_b.created, 1u);
  EXPECT_TRUE(ReadFile(d / "copy.bin") == album) << "D's copy.bin differs";
  EXPECT_GE(remote.bytes_read() - read_before, 100000u);
  EXPECT_LE(remote.bytes_read() - read_before, 1u << 20);
}

}  // namespace
}  // namespace meshsync::files::testing
