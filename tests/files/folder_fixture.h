// Test fixture for folder sync: two folders under a fresh temporary
// directory, file helpers, and a tree snapshot to compare them with.
#ifndef MESHSYNC_TESTS_FILES_FOLDER_FIXTURE_H_
#define MESHSYNC_TESTS_FILES_FOLDER_FIXTURE_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "files/folder.h"
#include "gtest/gtest.h"
#include "testing/scratch_dir.h"

namespace meshsync::files::testing {

namespace fs = std::filesystem;

// path -> "F 644 <bytes>", "D 755", "L <target>"; .meshsync excluded.
using Tree = std::map<std::string, std::string>;

inline std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteFile(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

inline Tree Snapshot(const fs::path& root, bool include_meta = false) {
  Tree tree;
  std::vector<fs::path> stack{root};
  while (!stack.empty()) {
    fs::path dir = stack.back();
    stack.pop_back();
    for (const auto& entry : fs::directory_iterator(dir)) {
      std::string rel = entry.path().lexically_relative(root).string();
      if (!include_meta && rel == ".meshsync") continue;
      struct stat st;
      lstat(entry.path().c_str(), &st);
      char mode[8];
      snprintf(mode, sizeof mode, "%o", st.st_mode & 07777);
      if (S_ISLNK(st.st_mode)) {
        tree[rel] = "L " + fs::read_symlink(entry.path()).string();
      } else if (S_ISDIR(st.st_mode)) {
        tree[rel] = std::string("D ") + mode;
        stack.push_back(entry.path());
      } else {
        tree[rel] = std::string("F ") + mode + " " + ReadFile(entry.path());
      }
    }
  }
  return tree;
}

// Contents of every file in the folder's trash.
inline std::vector<std::string> TrashContents(const fs::path& root) {
  std::vector<std::string> out;
  fs::path trash = root / ".meshsync" / "trash";
  if (!fs::exists(trash)) return out;
  for (const auto& e : fs::recursive_directory_iterator(trash)) {
    if (e.is_regular_file() && !e.is_symlink()) out.push_back(ReadFile(e.path()));
  }
  return out;
}

class FolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.empty()) << "no temporary directory";
    fs::create_directories(a_);
    fs::create_directories(b_);
  }

  Result<FolderSyncReport> TrySync(const FolderSyncOptions& options = {},
                                   const FolderOptions& folder = {}) {
    MESHSYNC_ASSIGN_OR_RETURN(auto a, Folder::Open(a_, folder));
    MESHSYNC_ASSIGN_OR_RETURN(auto b, Folder::Open(b_, folder));
    return SyncFolders(*a, *b, options);
  }

  // Syncs and expects success with nothing left unsynced.
  FolderSyncReport Sync(const FolderSyncOptions& options = {}, const FolderOptions& folder = {}) {
    auto report = TrySync(options, folder);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    if (!report.ok()) return {};
    for (const std::string& p : report->problems) ADD_FAILURE() << "not synced: " << p;
    return *report;
  }

  void ExpectInSync() {
    Tree a = Snapshot(a_);
    Tree b = Snapshot(b_);
    EXPECT_EQ(a, b);
  }

  // Names in `dir` (relative to root) that look like conflict copies.
  static std::vector<std::string> ConflictCopies(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::string name = e.path().filename().string();
      if (name.find(".conflict-") != std::string::npos) out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // A's file `name` (holding `from_a`) is synced to B, but B's user writes
  // `during` there after B was scanned, before the change is applied: the
  // change is skipped, the write stays, nothing is left behind in B's
  // temporary folder. The next sync keeps both, one as a conflict copy.
  void ExpectAWriteDuringTheSyncKept(const std::string& name, const std::string& from_a,
                                     const std::string& during) {
    auto a = Folder::Open(a_, {});
    auto b = Folder::Open(b_, {});
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE((*a)->replica().DetectChanges().ok());
    ASSERT_TRUE((*b)->replica().DetectChanges().ok());
    WriteFile(b_ / name, during);
    SyncOptions options;
    options.detect_changes = false;
    auto report = Synchronize((*a)->replica(), (*b)->replica(), options);
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report->a_to_b.skipped, 1u);
    EXPECT_EQ(ReadFile(b_ / name), during);
    const fs::path tmp = b_ / ".meshsync" / "tmp";
    EXPECT_TRUE(!fs::exists(tmp) || fs::is_empty(tmp)) << "the file that did not go in was left";
    a->reset();
    b->reset();
    Sync();
    ExpectInSync();
    std::vector<std::string> copies = ConflictCopies(a_);
    ASSERT_EQ(copies.size(), 1u);
    std::set<std::string> contents{ReadFile(a_ / name), ReadFile(a_ / copies[0])};
    EXPECT_EQ(contents, (std::set<std::string>{from_a, during}));
  }

  meshsync::testing::ScratchDir scratch_{"folder-test"};
  const fs::path dir_ = scratch_.path();
  const fs::path a_ = dir_ / "A";
  const fs::path b_ = dir_ / "B";
};

}  // namespace meshsync::files::testing

#endif  // MESHSYNC_TESTS_FILES_FOLDER_FIXTURE_H_
