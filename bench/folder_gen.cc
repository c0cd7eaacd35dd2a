// Generates and mutates the folder-sync benchmark data, deterministically
// (seeded), with fixed old mtimes, fast enough for 100,000 files.
//
//   folder_gen small DIR FILES DIRS MIN_BYTES MAX_BYTES SEED
//   folder_gen large DIR FILES BYTES SEED
//   folder_gen mutate DIR SEED     W3: rewrite 100 small files, add 50, delete 50,
//                                  overwrite 1 MiB in the middle of one large file
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Rng {
  uint64_t x;
  uint64_t Next() {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t Range(uint64_t lo, uint64_t hi) { return lo + Next() % (hi - lo + 1); }
};

void Fill(Rng& rng, std::vector<char>& buf, size_t n) {
  buf.resize(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng.Next();
    __builtin_memcpy(buf.data() + i, &v, 8);
  }
  for (; i < n; ++i) buf[i] = static_cast<char>(rng.Next());
}

void WriteAt(const fs::path& p, const std::vector<char>& data, off_t offset, bool truncate) {
  int fd = open(p.c_str(), O_WRONLY | O_CREAT | (truncate ? O_TRUNC : 0), 0644);
  if (fd < 0 || pwrite(fd, data.data(), data.size(), offset) != static_cast<ssize_t>(data.size())) {
    std::perror(p.c_str());
    std::exit(1);
  }
  // A fixed time far from now, as data at rest has.
  struct timespec times[2] = {{1700000000, 0}, {1700000000 + (offset % 1000), 0}};
  futimens(fd, times);
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  std::vector<char> buf;
  if (a.size() == 7 && a[0] == "small") {
    fs::path dir = a[1];
    uint64_t files = std::stoull(a[2]), dirs = std::stoull(a[3]);
    uint64_t lo = std::stoull(a[4]), hi = std::stoull(a[5]);
    Rng rng{std::stoull(a[6])};
    for (uint64_t d = 0; d < dirs; ++d) fs::create_directories(dir / ("d" + std::to_string(d)));
    for (uint64_t f = 0; f < files; ++f) {
      Fill(rng, buf, rng.Range(lo, hi));
      WriteAt(dir / ("d" + std::to_string(f % dirs)) / ("f" + std::to_string(f)), buf, 0, true);
    }
    return 0;
  }
  if (a.size() == 5 && a[0] == "large") {
    fs::path dir = a[1];
    uint64_t files = std::stoull(a[2]), bytes = std::stoull(a[3]);
    Rng rng{std::stoull(a[4])};
    fs::create_directories(dir);
    for (uint64_t f = 0; f < files; ++f) {
      fs::path p = dir / ("large" + std::to_string(f) + ".bin");
      for (uint64_t off = 0; off < bytes; off += 8 << 20) {
        Fill(rng, buf, std::min<uint64_t>(8 << 20, bytes - off));
        WriteAt(p, buf, static_cast<off_t>(off), off == 0);
      }
    }
    return 0;
  }
  if (a.size() == 3 && a[0] == "mutate") {
    fs::path dir = a[1];
    Rng rng{std::stoull(a[2])};
    std::vector<fs::path> small, large;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      std::string rel = e.path().lexically_relative(dir).string();
      if (rel.rfind(".", 0) == 0 || rel.find("/.") != std::string::npos) continue;
      if (!e.is_regular_file()) continue;
      (e.file_size() > (1 << 20) ? large : small).push_back(e.path());
    }
    std::sort(small.begin(), small.end());
    std::sort(large.begin(), large.end());
    for (int i = 0; i < 100 && !small.empty(); ++i) {
      Fill(rng, buf, rng.Range(1024, 16384));
      WriteAt(small[rng.Next() % small.size()], buf, 0, true);
    }
    for (int i = 0; i < 50 && !small.empty(); ++i) {
      size_t k = rng.Next() % small.size();
      fs::remove(small[k]);
      small.erase(small.begin() + static_cast<long>(k));
    }
    for (int i = 0; i < 50; ++i) {
      Fill(rng, buf, rng.Range(1024, 16384));
      fs::path folder = dir / ("d" + std::to_string(i % 100));
      fs::create_directories(folder);  // scaled-down data has fewer folders
      WriteAt(folder / ("new" + std::to_string(rng.Next() % 1000000)), buf, 0, true);
    }
    if (!large.empty()) {
      fs::path p = large[rng.Next() % large.size()];
      Fill(rng, buf, 1 << 20);
      WriteAt(p, buf, static_cast<off_t>(fs::file_size(p) / 2), false);
    }
    return 0;
  }
  std::fprintf(stderr, "usage: folder_gen small|large|mutate ... (see the source)\n");
  return 2;
}
