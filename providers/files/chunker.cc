#include "files/chunker.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <memory>
#include <thread>

namespace meshsync::files {
namespace {

constexpr size_t kMinChunk = 16 << 10;
constexpr size_t kAvgChunk = 64 << 10;
constexpr size_t kMaxChunk = 256 << 10;
// Normalised chunking: a harder mask before the average size, an easier
// one after, so chunk sizes cluster around the average.
// The high bits of a gear hash depend on the most bytes (bit k on the last
// k + 1), so the masks take the top 18 and 14 bits.
constexpr uint64_t kMaskHard = 0xFFFFC00000000000ull;
constexpr uint64_t kMaskEasy = 0xFFFC000000000000ull;
static_assert(std::popcount(kMaskHard) == 18 && std::popcount(kMaskEasy) == 14);

struct GearTable {
  uint64_t v[256];
  GearTable() {
    uint64_t x = 0x6d65736873796e63ull;  // "meshsync": fixed forever
    for (uint64_t& g : v) {
      x += 0x9E3779B97F4A7C15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      g = z ^ (z >> 31);
    }
  }
};
const GearTable kGear;

// Rolls the gear hash over [i, end) and returns one past the first byte
// after which (hash & mask) == 0, or 0 if there is none. Four bytes a step: the loop's
// own bookkeeping then costs a quarter as much per byte (the hash itself
// is one dependent add a byte).
template <uint64_t kMask>
size_t Roll(const uint8_t* data, size_t i, size_t end, uint64_t& hash) {
  uint64_t h = hash;
  for (; i + 4 <= end; i += 4) {
    h = (h << 1) + kGear.v[data[i]];
    if ((h & kMask) == 0) return i + 1;
    h = (h << 1) + kGear.v[data[i + 1]];
    if ((h & kMask) == 0) return i + 2;
    h = (h << 1) + kGear.v[data[i + 2]];
    if ((h & kMask) == 0) return i + 3;
    h = (h << 1) + kGear.v[data[i + 3]];
    if ((h & kMask) == 0) return i + 4;
  }
  for (; i < end; ++i) {
    h = (h << 1) + kGear.v[data[i]];
    if ((h & kMask) == 0) return i + 1;
  }
  hash = h;
  return 0;
}

size_t NextCut(const uint8_t* data, size_t size) {
  if (size <= kMinChunk) return size;
  size_t normal = std::min(size, kAvgChunk);
  size_t limit = std::min(size, kMaxChunk);
  uint64_t hash = 0;
  if (size_t cut = Roll<kMaskHard>(data, kMinChunk, normal, hash)) return cut;
  // No cut before the average size; past it, an easier mask.
  if (size_t cut = Roll<kMaskEasy>(data, normal, limit, hash)) return cut;
  return limit;
}

// Cuts and hashes chunks from the front of [data, data + size) and returns
// the bytes it used. Unless `last` (the segment ends at data + size), it
// stops while fewer than kMaxChunk bytes are left: a chunk's end can only be
// known with kMaxChunk bytes in view, so those wait for the next read. The
// chunks are cut first and then hashed together (HashRanges), side by side
// where the CPU can.
size_t ChunkSome(const uint8_t* data, size_t size, bool last, std::vector<Chunk>& out) {
  std::vector<ByteSpan> ranges;
  size_t offset = 0;
  while (offset < size && (last || size - offset >= kMaxChunk)) {
    size_t cut = NextCut(data + offset, size - offset);
    ranges.push_back(ByteSpan{data + offset, cut});
    offset += cut;
  }
  std::vector<Sha256> hashes(ranges.size());
  HashRanges(ranges, hashes);
  for (size_t i = 0; i < ranges.size(); ++i) {
    out.push_back(Chunk{static_cast<uint32_t>(ranges[i].size), hashes[i]});
  }
  return offset;
}

}  // namespace

void ChunkBuffer(const uint8_t* data, size_t size, std::vector<Chunk>& out) {
  ChunkSome(data, size, true, out);
}

Sha256 ContentDigest(const std::vector<Chunk>& chunks) {
  if (chunks.size() == 1) return chunks[0].hash;
  std::string all;
  all.reserve(chunks.size() * 32);
  for (const Chunk& c : chunks) all.append(reinterpret_cast<const char*>(c.hash.data()), 32);
  return HashBytes(all.data(), all.size());
}

void HashFiles(std::vector<HashJob>& jobs, unsigned threads) {
  struct Segment {
    size_t job;
    uint64_t offset;
    size_t length;
    std::vector<Chunk> chunks;
    Status status;
  };
  std::vector<Segment> segments;
  for (size_t j = 0; j < jobs.size(); ++j) {
    uint64_t size = jobs[j].size;
    for (uint64_t off = 0; off < size; off += kSegmentBytes) {
      segments.push_back(
          Segment{j, off, static_cast<size_t>(std::min(kSegmentBytes, size - off)), {}, {}});
    }
  }
  uint64_t longest = 0;
  for (const Segment& seg : segments) longest = std::max<uint64_t>(longest, seg.length);
  std::atomic<size_t> next{0};
  auto work = [&] {
    // A segment is read a window at a time (its chunks need only kMaxChunk
    // bytes in view), so a thread touches 2.25 MiB, not a whole segment:
    // fresh memory is dear on a virtual machine, and a daemon's peak RSS
    // is what its users see. A window holds about 32 chunks, enough to keep
    // HashRanges' sixteen lanes busy (3.1 GB/s; 3.2 with 64, 2.2 with 16:
    // lanes idle while the longest chunk of a batch finishes).
    // No larger than the longest segment: with the huge-page heap, the
    // first byte touched in a large allocation costs a zeroed 2 MiB page.
    constexpr size_t kMaxWindow = (2u << 20) + kMaxChunk;
    const size_t window = static_cast<size_t>(std::min<uint64_t>(kMaxWindow, longest));
    std::unique_ptr<uint8_t[]> buffer;
    while (true) {
      size_t s = next.fetch_add(1);
      if (s >= segments.size()) return;
      Segment& seg = segments[s];
      if (buffer == nullptr) buffer.reset(new uint8_t[window]);
      size_t have = 0;  // bytes in the window, not yet chunked
      size_t read = 0;  // bytes of the segment read so far
      while (read < seg.length || have > 0) {
        const size_t want = std::min(window - have, seg.length - read);
        for (size_t got = 0; got < want;) {
          ssize_t n = pread(jobs[seg.job].fd, buffer.get() + have + got, want - got,
                            static_cast<off_t>(seg.offset + read + got));
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            seg.status = UnavailableError(n == 0 ? "file shrank while it was read"
                                                 : std::string("read failed: ") + strerror(errno));
            break;
          }
          got += static_cast<size_t>(n);
        }
        if (!seg.status.ok()) break;
        have += want;
        read += want;
        const size_t used = ChunkSome(buffer.get(), have, read == seg.length, seg.chunks);
        std::memmove(buffer.get(), buffer.get() + used, have - used);
        have -= used;
      }
    }
  };
  unsigned n = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(segments.size())));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < n; ++i) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  for (Segment& seg : segments) {
    HashJob& job = jobs[seg.job];
    if (!seg.status.ok()) job.status = seg.status;
    job.chunks.insert(job.chunks.end(), seg.chunks.begin(), seg.chunks.end());
  }
}

}  // namespace meshsync::files
