// Property: random file-system operations on two folders, with syncs in
// between. After a final sync the trees are identical, and no sync ever
// loses a content that either folder held when it began: afterwards it is
// in a tree (as the file, or a conflict copy) or in a trash.
#include <random>
#include <set>

#include "folder_fixture.h"
#include "rapidcheck.h"
#include "rapidcheck/gtest.h"

namespace meshsync::files::testing {
namespace {

class Workload {
 public:
  Workload(const fs::path& a, const fs::path& b, uint64_t seed) : roots_{a, b}, rng_(seed) {}

  void Step() {
    const fs::path& root = roots_[Pick(2)];
    std::vector<fs::path> files, dirs{root};
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      if (e.path().filename() == ".meshsync") continue;
      if (e.path().lexically_relative(root).string().rfind(".meshsync", 0) == 0) continue;
      if (e.is_directory()) {
        dirs.push_back(e.path());
      } else {
        files.push_back(e.path());
      }
    }
    static const char* kNames[] = {"a", "b.txt", "c.md", "d"};
    static const char* kDirNames[] = {"x", "y", "z"};
    fs::path dir = dirs[Pick(dirs.size())];
    std::error_code ec;
    size_t op = Pick(10);
    if (getenv("FOLDER_PROPERTY_VERBOSE")) {
      fprintf(stderr, "op %zu on %s dir %s\n", op, root.filename().c_str(),
              dir.lexically_relative(root).c_str());
    }
    switch (op) {
      case 0:
      case 1:  // create or overwrite
        WriteFile(dir / kNames[Pick(4)], Token());
        break;
      case 2:  // write a file in place
        if (!files.empty()) WriteFile(files[Pick(files.size())], Token());
        break;
      case 3:  // append
        if (!files.empty()) {
          fs::path f = files[Pick(files.size())];
          WriteFile(f, ReadFile(f) + Token());
        }
        break;
      case 4:  // truncate
        if (!files.empty()) {
          fs::path f = files[Pick(files.size())];
          std::string data = ReadFile(f);
          WriteFile(f, data.substr(0, data.size() / 2));
        }
        break;
      case 5:  // rename within its folder
        if (!files.empty()) {
          fs::path f = files[Pick(files.size())];
          fs::path to = f.parent_path() / kNames[Pick(4)];
          if (!fs::exists(to)) fs::rename(f, to, ec);
        }
        break;
      case 6:  // move across folders (a file or a folder)
        if (Pick(2) == 0 && !files.empty()) {
          fs::path f = files[Pick(files.size())];
          fs::path to = dir / f.filename();
          if (!fs::exists(to)) fs::rename(f, to, ec);
        } else if (dirs.size() > 1) {
          fs::path d = dirs[1 + Pick(dirs.size() - 1)];
          fs::path to = dirs[Pick(dirs.size())] / kDirNames[Pick(3)];
          // Not into itself.
          std::string ds = d.string() + "/", ts = to.string() + "/";
          if (!fs::exists(to) && ts.rfind(ds, 0) != 0) fs::rename(d, to, ec);
        }
        break;
      case 7:  // delete a file
        if (!files.empty()) fs::remove(files[Pick(files.size())], ec);
        break;
      case 8:  // mkdir
        fs::create_directories(dir / kDirNames[Pick(3)], ec);
        break;
      case 9:  // rmdir, with what is in it
        if (dirs.size() > 1) fs::remove_all(dirs[1 + Pick(dirs.size() - 1)], ec);
        break;
    }
  }

 private:
  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  std::string Token() { return "<" + std::to_string(++counter_) + ">"; }

  fs::path roots_[2];
  std::mt19937_64 rng_;
  uint64_t counter_ = 0;
};

// Every file content in the folder, its trash included.
std::multiset<std::string> Contents(const fs::path& root) {
  std::multiset<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    std::string rel = e.path().lexically_relative(root).string();
    bool in_meta = rel.rfind(".meshsync", 0) == 0;
    if (in_meta && rel.rfind(".meshsync/trash", 0) != 0) continue;
    if (e.is_regular_file() && !e.is_symlink()) out.insert(ReadFile(e.path()));
  }
  return out;
}

class FolderProperty : public FolderTest {
 public:
  void TestBody() override {}
  using FolderTest::SetUp;
  using FolderTest::TearDown;

  // Sync loses nothing: every content either folder holds before a sync is
  // in a tree or a trash after it.
  void SyncAndCheck() {
    std::multiset<std::string> before = Contents(a_);
    before.merge(Contents(b_));
    auto report = TrySync();
    RC_ASSERT(report.ok());
    if (getenv("FOLDER_PROPERTY_VERBOSE")) {
      for (const std::string& p : report->problems) fprintf(stderr, "problem: %s\n", p.c_str());
      for (const fs::path& root : {a_, b_}) {
        for (auto& [k, v] : Snapshot(root)) {
          fprintf(stderr, "   after %s: %s = %s\n", root.filename().c_str(), k.c_str(), v.c_str());
        }
      }
    }
    RC_ASSERT(report->problems.empty());
    std::multiset<std::string> after = Contents(a_);
    after.merge(Contents(b_));
    for (const std::string& c : before) {
      if (!c.empty() && after.count(c) == 0) {
        if (getenv("FOLDER_PROPERTY_VERBOSE")) {
          fprintf(stderr, "lost: %s\n", c.c_str());
          for (const fs::path& root : {a_, b_}) {
            for (auto& [k, v] : Snapshot(root, true)) {
              fprintf(stderr, "   %s: %s = %s\n", root.filename().c_str(), k.c_str(), v.c_str());
            }
          }
        }
        RC_FAIL("sync lost a file's content: " + c);
      }
    }
  }

  void Run(uint64_t seed, int steps) {
    Workload work(a_, b_, seed);
    for (int i = 0; i < steps; ++i) {
      work.Step();
      if (i % 4 == 3) SyncAndCheck();
    }
    SyncAndCheck();
    if (Snapshot(a_) != Snapshot(b_)) SyncAndCheck();
    RC_ASSERT(Snapshot(a_) == Snapshot(b_));
  }
};

RC_GTEST_PROP(FolderPropertyTest, RandomEditsConvergeAndLoseNothing, ()) {
  uint64_t seed = *rc::gen::arbitrary<uint64_t>();
  int steps = *rc::gen::inRange(1, 40);
  FolderProperty test;
  test.SetUp();
  test.Run(seed, steps);
  test.TearDown();
}

}  // namespace
}  // namespace meshsync::files::testing
