// kill -9 at random points of a large sync: no partial file is ever visible,
// and the next run completes the sync.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <random>
#include <thread>

#include "folder_fixture.h"

extern char** environ;

namespace meshsync::files::testing {
namespace {

std::string Pattern(size_t size, uint64_t seed) {
  std::string data(size, '\0');
  uint64_t x = seed;
  for (char& c : data) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    c = static_cast<char>(x >> 56);
  }
  return data;
}

pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// Whether process `pid` has a file open for writing under `root` that is
// not in place yet: a temporary one, named in .meshsync/tmp or not named at
// all (O_TMPFILE, which /proc shows as "DIR/#INODE (deleted)").
bool WritingAFile(pid_t pid, const fs::path& root) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::string target = fs::read_symlink(entry.path(), ec).string();
    if (ec || !target.starts_with(root.string() + "/")) continue;
    if (target.find("/.meshsync/tmp/") != std::string::npos ||
        (target.find("/#") != std::string::npos && target.ends_with(" (deleted)"))) {
      return true;
    }
  }
  return false;
}

int RunSync(const fs::path& a, const fs::path& b) {
  pid_t pid = Spawn({MESHSYNC_BIN, "sync", a.string(), b.string()});
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(FolderTest, KillNineAtRandomPointsNeverShowsAPartialFile) {
  std::map<std::string, std::string> expected;
  for (int i = 0; i < 120; ++i) {
    std::string rel = "d" + std::to_string(i % 6) + "/f" + std::to_string(i);
    expected[rel] = Pattern(48 << 10, static_cast<uint64_t>(i));
  }
  for (int i = 0; i < 3; ++i) expected["big/b" + std::to_string(i)] = Pattern(48 << 20, 1000u + i);
  for (const auto& [rel, data] : expected) {
    WriteFile(a_ / rel, data);
    // Not modified just now, so scans trust their stat cache and the time
    // goes into copying.
    fs::last_write_time(a_ / rel, fs::file_time_type::clock::now() - std::chrono::hours(1));
  }

  // How long a sync into an empty folder takes, once A is scanned.
  fs::path scratch = dir_ / "scratch";
  fs::create_directories(scratch);
  ASSERT_EQ(RunSync(a_, scratch), 0);
  fs::remove_all(scratch);
  fs::create_directories(scratch);
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(RunSync(a_, scratch), 0);
  int full_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - start)
                                     .count());

  std::mt19937 rng(20261122);
  int kills = 0, mid_file = 0;
  for (int attempt = 0; attempt < 80 && (kills < 8 || mid_file < 1); ++attempt) {
    if (attempt % 3 == 0) {  // now and then, from scratch
      fs::remove_all(b_);
      fs::create_directories(b_);
    }
    pid_t pid = Spawn({MESHSYNC_BIN, "sync", a_.string(), b_.string()});
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(full_ms / 20, full_ms)(rng)));
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == 0) {
      bool writing = WritingAFile(pid, b_);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ++kills;
      // A file open for writing, or a temporary file left behind, means
      // the kill landed mid-file.
      fs::path tmp = b_ / ".meshsync" / "tmp";
      if (writing || (fs::exists(tmp) && !fs::is_empty(tmp))) ++mid_file;
    } else {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    // Whatever is visible in B is whole.
    for (const auto& [rel, data] : Snapshot(b_)) {
      if (data[0] != 'F') continue;
      auto it = expected.find(rel);
      ASSERT_NE(it, expected.end()) << "unexpected file " << rel;
      ASSERT_TRUE(data == "F 644 " + it->second) << rel << " is partial";
    }
  }
  EXPECT_GE(kills, 8);
  EXPECT_GE(mid_file, 1) << "no kill landed while a file was being written";
  // The next run completes the sync.
  ASSERT_EQ(RunSync(a_, b_), 0);
  ExpectInSync();
  EXPECT_TRUE(ConflictCopies(b_ / "big").empty());
  EXPECT_TRUE(ConflictCopies(b_ / "d0").empty());
}

}  // namespace
}  // namespace meshsync::files::testing
