#include "files/chunker.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "testing/scratch_dir.h"

namespace meshsync::files {
namespace {

// The chunking format, written out as plainly as it can be: the gear table
// from its fixed seed and the byte-at-a-time loop. Chunk boundaries are part
// of what replicas exchange (chunk lists, content digests), so however
// ChunkBuffer is made faster, it must cut exactly here.
struct Reference {
  uint64_t gear[256];
  Reference() {
    uint64_t x = 0x6d65736873796e63ull;
    for (uint64_t& g : gear) {
      x += 0x9E3779B97F4A7C15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      g = z ^ (z >> 31);
    }
  }
  size_t NextCut(const uint8_t* data, size_t size) const {
    const size_t min = 16 << 10, avg = 64 << 10, max = 256 << 10;
    if (size <= min) return size;
    size_t normal = std::min(size, avg), limit = std::min(size, max);
    uint64_t hash = 0;
    size_t i = min;
    for (; i < normal; ++i) {
      hash = (hash << 1) + gear[data[i]];
      if ((hash & 0xFFFFC00000000000ull) == 0) return i + 1;
    }
    for (; i < limit; ++i) {
      hash = (hash << 1) + gear[data[i]];
      if ((hash & 0xFFFC000000000000ull) == 0) return i + 1;
    }
    return limit;
  }
  std::vector<uint32_t> Cuts(const std::string& s) const {
    std::vector<uint32_t> lengths;
    const auto* data = reinterpret_cast<const uint8_t*>(s.data());
    for (size_t offset = 0; offset < s.size();) {
      size_t cut = NextCut(data + offset, s.size() - offset);
      lengths.push_back(static_cast<uint32_t>(cut));
      offset += cut;
    }
    return lengths;
  }
};

std::vector<uint32_t> Lengths(const std::string& s) {
  std::vector<Chunk> chunks;
  ChunkBuffer(reinterpret_cast<const uint8_t*>(s.data()), s.size(), chunks);
  std::vector<uint32_t> lengths;
  for (const Chunk& c : chunks) lengths.push_back(c.length);
  return lengths;
}

std::string RandomBytes(std::mt19937_64& random, size_t size) {
  std::string s(size, '\0');
  for (char& c : s) c = static_cast<char>(random() >> 56);
  return s;
}

TEST(Chunker, CutsWhereThePlainLoopCuts) {
  Reference reference;
  std::mt19937_64 random(11);
  std::vector<std::string> inputs = {
      "", "x", std::string(16 << 10, 'a'), std::string((16 << 10) + 1, 'a'),
      std::string(3 << 20, '\0')};  // no cut: every chunk is the largest
  for (size_t size : {size_t{70000}, size_t{(64 << 10) + 3}, size_t{256 << 10}, size_t{3 << 20}}) {
    inputs.push_back(RandomBytes(random, size));
  }
  // A cut on the last byte the harder mask applies to, where the easier one
  // takes over: a prefix with no cut yet, then 64 bytes (all the hash
  // remembers) tried until the first match falls on the last of them.
  std::string edge;
  for (int attempt = 0; attempt < 64 && edge.empty(); ++attempt) {
    std::string prefix = RandomBytes(random, (64 << 10) - 64);
    const auto* p = reinterpret_cast<const uint8_t*>(prefix.data());
    if (reference.NextCut(p, prefix.size()) != prefix.size()) continue;  // cut already
    uint64_t start = 0;
    for (size_t i = 16 << 10; i < prefix.size(); ++i) start = (start << 1) + reference.gear[p[i]];
    for (int tries = 0; tries < (1 << 24) && edge.empty(); ++tries) {
      std::string tail = RandomBytes(random, 64);
      uint64_t hash = start;
      for (size_t i = 0; i < tail.size(); ++i) {
        hash = (hash << 1) + reference.gear[static_cast<uint8_t>(tail[i])];
        if ((hash & 0xFFFFC00000000000ull) != 0) continue;
        if (i + 1 == tail.size()) edge = prefix + tail + RandomBytes(random, 1000);
        break;
      }
    }
  }
  ASSERT_FALSE(edge.empty());
  inputs.push_back(edge);
  for (const std::string& input : inputs) {
    SCOPED_TRACE(input.size());
    EXPECT_EQ(Lengths(input), reference.Cuts(input));
  }
  EXPECT_EQ(Lengths(edge).front(), 64u << 10);
}

// Pins the format itself, table and all: these are the chunks every
// meshsync has cut this data into, and must keep cutting it into.
TEST(Chunker, BoundariesAndHashesNeverChange) {
  std::string data;
  uint64_t x = 7;
  for (size_t i = 0; i < (3u << 20); ++i) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    data.push_back(static_cast<char>(z >> 56));
  }
  data.append(600000, '\0');
  data.append(data.substr(1000, 77777));
  std::vector<Chunk> chunks;
  ChunkBuffer(reinterpret_cast<const uint8_t*>(data.data()), data.size(), chunks);
  std::vector<uint32_t> lengths;
  for (const Chunk& c : chunks) lengths.push_back(c.length);
  const std::vector<uint32_t> expected = {
      77743, 74897, 78492,  97040, 70334, 30585, 68230, 69871,  75136,  107367, 66024, 66800,
      82326, 24593, 132283, 74904, 65662, 68834, 79611, 73640,  73676,  72898,  36625, 70524,
      75865, 91708, 113088, 75155, 20491, 75618, 79723, 82723,  91886,  81684,  79694, 74058,
      45977, 25370, 85977,  71065, 21292, 73554, 78095, 262144, 262144, 153776, 64323};
  EXPECT_EQ(lengths, expected);
  Sha256 digest = ContentDigest(chunks);
  std::string hex;
  for (uint8_t b : digest) {
    static const char kHex[] = "0123456789abcdef";
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  EXPECT_EQ(hex, "bb548d434fe7320477ad290de409fee55342b3c847736c675fe96aece22294b6");
}

// HashFiles reads a segment a window at a time; its chunks must be the ones
// ChunkBuffer cuts from each whole segment in memory.
TEST(Chunker, HashingAFileCutsEachSegmentAsChunkBufferDoes) {
  meshsync::testing::ScratchDir dir("chunker");
  ASSERT_FALSE(dir.path().empty());
  std::mt19937_64 random(3);
  std::string data = RandomBytes(random, 2 * kSegmentBytes + (3u << 20) + 12345);
  data.replace(kSegmentBytes - 100000, 900000, 900000, '\0');  // maximal chunks across a cut
  std::string path = (dir.path() / "f").string();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  std::vector<Chunk> expected;
  for (size_t offset = 0; offset < data.size(); offset += kSegmentBytes) {
    ChunkBuffer(reinterpret_cast<const uint8_t*>(data.data()) + offset,
                std::min<size_t>(kSegmentBytes, data.size() - offset), expected);
  }
  for (unsigned threads : {1u, 2u}) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::vector<HashJob> jobs(2);
    jobs[0].fd = fd;
    jobs[0].size = data.size();
    jobs[1].fd = fd;
    jobs[1].size = data.size() + 1;  // the file is shorter than it was
    HashFiles(jobs, threads);
    close(fd);
    ASSERT_TRUE(jobs[0].status.ok()) << jobs[0].status.message();
    EXPECT_TRUE(jobs[0].chunks == expected) << threads << " threads";
    EXPECT_EQ(jobs[1].status.code(), StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace meshsync::files
