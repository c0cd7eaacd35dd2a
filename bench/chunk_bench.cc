// Hashing a file's chunks: OpenSSL one chunk at a time against HashRanges'
// sixteen lanes, on the same chunks of the same bytes, then whole-file
// chunking (cut and hash) on one core and on all of them.
//
//   chunk_bench [MIB] [ROUNDS]    default 256 MiB of random bytes, 5 rounds
//
// Prints the median throughput of each in GB/s. The bytes are in memory, so
// this measures the CPU's work alone; bench/folder_bench.sh measures syncs.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "files/chunker.h"
#include "files/sha256_lanes.h"

using meshsync::files::ByteSpan;
using meshsync::files::Chunk;
using meshsync::files::Sha256;

namespace {

double MedianSeconds(int rounds, const std::function<void()>& run) {
  std::vector<double> seconds;
  for (int r = 0; r < rounds; ++r) {
    auto start = std::chrono::steady_clock::now();
    run();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 256;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
  if (mib == 0 || rounds <= 0) {
    std::fprintf(stderr, "usage: chunk_bench [MIB] [ROUNDS]\n");
    return 2;
  }
  const size_t size = mib << 20;
  std::vector<uint8_t> data(size);
  std::mt19937_64 random(1);
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t v = random();
    std::copy_n(reinterpret_cast<const uint8_t*>(&v), 8, data.data() + i);
  }

  // The chunks, as the chunker cuts them (8 MiB segments).
  std::vector<ByteSpan> spans;
  for (size_t off = 0; off < size; off += meshsync::files::kSegmentBytes) {
    const size_t len = std::min<size_t>(meshsync::files::kSegmentBytes, size - off);
    std::vector<Chunk> chunks;
    meshsync::files::ChunkBuffer(data.data() + off, len, chunks);
    size_t at = off;
    for (const Chunk& c : chunks) {
      spans.push_back(ByteSpan{data.data() + at, c.length});
      at += c.length;
    }
  }
  std::printf("%zu MiB of random bytes, %zu chunks (mean %.1f KiB), median of %d rounds\n", mib,
              spans.size(), static_cast<double>(size) / static_cast<double>(spans.size()) / 1024,
              rounds);
  auto rate = [&](double s) { return static_cast<double>(size) / s / 1e9; };

  std::vector<Sha256> digests(spans.size()), lanes(spans.size());
  const double openssl = MedianSeconds(rounds, [&] {
    for (size_t i = 0; i < spans.size(); ++i) {
      digests[i] = meshsync::files::HashBytes(spans[i].data, spans[i].size);
    }
  });
  std::printf("  SHA-256, OpenSSL, one chunk at a time      %6.2f GB/s\n", rate(openssl));
  // Lanes in batches of the chunks one 2 MiB window holds, as HashFiles does.
  bool have_lanes = true;
  const double in_lanes = MedianSeconds(rounds, [&] {
    for (size_t i = 0; i < spans.size(); i += 32) {
      const size_t n = std::min<size_t>(32, spans.size() - i);
      have_lanes = meshsync::files::HashRangesInLanes(std::span(spans).subspan(i, n),
                                                      std::span(lanes).subspan(i, n));
    }
  });
  if (!have_lanes) {
    std::printf("  SHA-256 in lanes: this CPU has no AVX-512\n");
  } else {
    std::printf("  SHA-256, sixteen lanes, 32 chunks a batch  %6.2f GB/s  (%.2fx)%s\n",
                rate(in_lanes), openssl / in_lanes, lanes == digests ? "" : "  DIGESTS DIFFER");
  }

  const double one_core = MedianSeconds(rounds, [&] {
    for (size_t off = 0; off < size; off += meshsync::files::kSegmentBytes) {
      std::vector<Chunk> chunks;
      meshsync::files::ChunkBuffer(
          data.data() + off, std::min<size_t>(meshsync::files::kSegmentBytes, size - off), chunks);
    }
  });
  std::printf("  cut and hash (ChunkBuffer), one core       %6.2f GB/s\n", rate(one_core));

  // HashFiles reads a file: write the bytes to one and read it back (it
  // stays in the page cache).
  char path[] = "/tmp/chunk_bench.XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0 || write(fd, data.data(), size) != static_cast<ssize_t>(size)) {
    std::perror("chunk_bench: temporary file");
    return 1;
  }
  unlink(path);
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const double all_cores = MedianSeconds(rounds, [&] {
    std::vector<meshsync::files::HashJob> jobs(1);
    jobs[0].fd = fd;
    jobs[0].size = size;
    meshsync::files::HashFiles(jobs, threads);
  });
  std::printf("  HashFiles from the page cache, %u threads   %6.2f GB/s\n", threads,
              rate(all_cores));
  close(fd);
  return have_lanes && lanes != digests ? 1 : 0;
}
