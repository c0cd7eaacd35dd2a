#include "files/sha256_lanes.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace meshsync::files {
namespace {

std::string RandomBytes(std::mt19937_64& random, size_t size) {
  std::string s(size, '\0');
  for (char& c : s) c = static_cast<char>(random() >> 56);
  return s;
}

std::vector<ByteSpan> RangesOf(const std::vector<std::string>& inputs) {
  std::vector<ByteSpan> ranges;
  for (const std::string& s : inputs) {
    ranges.push_back(ByteSpan{reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  return ranges;
}

// Every length where SHA-256's padding changes shape (one padding block or
// two), lengths that are whole blocks, and chunk-sized ranges of unequal
// lengths, so that lanes finish at different times and take new ranges.
std::vector<std::string> Inputs(std::mt19937_64& random, size_t count) {
  std::vector<std::string> inputs;
  for (size_t size : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000}) {
    inputs.push_back(RandomBytes(random, size));
  }
  while (inputs.size() < count) inputs.push_back(RandomBytes(random, random() % (300 << 10)));
  return inputs;
}

TEST(Sha256Lanes, LanesGiveOpenSslsDigests) {
  std::mt19937_64 random(5);
  for (size_t count : {1, 15, 16, 17, 40, 100}) {
    std::vector<std::string> inputs = Inputs(random, count);
    inputs.resize(count);
    std::vector<ByteSpan> ranges = RangesOf(inputs);
    std::vector<Sha256> digests(count);
    if (!HashRangesInLanes(ranges, digests)) GTEST_SKIP() << "this CPU has no AVX-512";
    for (size_t i = 0; i < count; ++i) {
      EXPECT_EQ(digests[i], HashBytes(inputs[i].data(), inputs[i].size()))
          << "range " << i << " of " << count << ", " << inputs[i].size() << " bytes";
    }
  }
}

TEST(Sha256Lanes, KnownDigests) {
  // FIPS 180-2's examples, through the lanes among other ranges.
  std::vector<std::string> inputs = {"abc",
                                     "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"};
  std::mt19937_64 random(6);
  for (size_t i = 0; i < 30; ++i) inputs.push_back(RandomBytes(random, 70000));
  std::vector<ByteSpan> ranges = RangesOf(inputs);
  std::vector<Sha256> digests(inputs.size());
  if (!HashRangesInLanes(ranges, digests)) GTEST_SKIP() << "this CPU has no AVX-512";
  auto hex = [](const Sha256& d) {
    std::string s;
    for (uint8_t b : d) s += "0123456789abcdef"[b >> 4], s += "0123456789abcdef"[b & 15];
    return s;
  };
  EXPECT_EQ(hex(digests[0]), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex(digests[1]), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Lanes, HashRangesGivesOpenSslsDigestsWhicheverWayItTakes) {
  // Few ranges, one long range among short ones, and many: HashRanges
  // chooses lanes or OpenSSL by shape; the digests must not depend on it.
  std::mt19937_64 random(7);
  std::vector<std::vector<std::string>> cases;
  cases.push_back({RandomBytes(random, 100)});
  cases.push_back(Inputs(random, 20));
  cases.back().push_back(RandomBytes(random, 4 << 20));
  cases.push_back(Inputs(random, 64));
  for (const std::vector<std::string>& inputs : cases) {
    std::vector<ByteSpan> ranges = RangesOf(inputs);
    std::vector<Sha256> digests(inputs.size());
    HashRanges(ranges, digests);
    for (size_t i = 0; i < inputs.size(); ++i) {
      EXPECT_EQ(digests[i], HashBytes(inputs[i].data(), inputs[i].size())) << "range " << i;
    }
  }
}

}  // namespace
}  // namespace meshsync::files
