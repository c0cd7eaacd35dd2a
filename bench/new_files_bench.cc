// How a sync should make new files, measured: 10,000 files of 1-8 KiB in
// 100 folders, each written unnamed (O_TMPFILE) in its folder and then
//   linked   straight to its name (what the file provider does for a new
//            file from a peer), or
//   renamed  linked into a temporary folder first, then renamed to its name
//            (what it does for files prepared ahead, and did for all).
// The two alternate, each in a fresh tree, so that both meet the file
// system in the same states; the trees are removed at the end.
//
//   build/release/bench/new_files_bench [DIR] [ROUNDS]
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

constexpr int kFolders = 100;
constexpr int kFilesPerFolder = 100;

// Makes the tree under `root`; returns the seconds it took, or -1.
double MakeTree(const std::string& root, bool through_temp) {
  std::vector<char> bytes(8192, 'x');
  if (mkdir(root.c_str(), 0755) != 0) return -1;
  int root_fd = open(root.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (root_fd < 0 || mkdirat(root_fd, "tmp", 0755) != 0) return -1;
  int tmp_fd = openat(root_fd, "tmp", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (tmp_fd < 0) return -1;
  auto start = std::chrono::steady_clock::now();
  int made = 0;
  for (int d = 0; d < kFolders; ++d) {
    std::string folder = "d" + std::to_string(d);
    if (mkdirat(root_fd, folder.c_str(), 0755) != 0) return -1;
    int dir = openat(root_fd, folder.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (dir < 0) return -1;
    for (int f = 0; f < kFilesPerFolder; ++f) {
      int fd = openat(dir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0) return -1;
      size_t size = 1024 + static_cast<size_t>(f * 71) % 7000;
      if (pwrite(fd, bytes.data(), size, 0) != static_cast<ssize_t>(size) || fchmod(fd, 0644) != 0)
        return -1;
      std::string self = "/proc/self/fd/" + std::to_string(fd);
      std::string name = "f" + std::to_string(f);
      if (through_temp) {
        std::string temp = "t" + std::to_string(made);
        if (linkat(AT_FDCWD, self.c_str(), tmp_fd, temp.c_str(), AT_SYMLINK_FOLLOW) != 0 ||
            renameat2(tmp_fd, temp.c_str(), dir, name.c_str(), RENAME_NOREPLACE) != 0)
          return -1;
      } else if (linkat(AT_FDCWD, self.c_str(), dir, name.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        return -1;
      }
      close(fd);
      ++made;
    }
    close(dir);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  close(tmp_fd);
  close(root_fd);
  return seconds;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string base = argc > 1 ? argv[1] : "/tmp/meshsync-new-files-bench";
  int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
  if (rounds < 1) {
    std::fprintf(stderr, "usage: new_files_bench [DIR] [ROUNDS >= 1]\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::remove_all(base, ec);
  if (mkdir(base.c_str(), 0755) != 0) {
    std::perror(base.c_str());
    return 1;
  }
  std::vector<double> linked, renamed;
  for (int r = 0; r < rounds; ++r) {
    for (bool through_temp : {false, true}) {
      std::string root = base + "/" + (through_temp ? "renamed-" : "linked-") + std::to_string(r);
      double seconds = MakeTree(root, through_temp);
      if (seconds < 0) {
        std::perror(root.c_str());
        std::filesystem::remove_all(base, ec);
        return 1;
      }
      (through_temp ? renamed : linked).push_back(seconds);
      std::printf("round %d %-8s %.3f s\n", r + 1, through_temp ? "renamed" : "linked", seconds);
    }
  }
  std::filesystem::remove_all(base, ec);
  std::printf("%d files, median of %d: linked %.3f s, renamed %.3f s (%.2fx)\n",
              kFolders * kFilesPerFolder, rounds, Median(linked), Median(renamed),
              Median(linked) / Median(renamed));
  return 0;
}
