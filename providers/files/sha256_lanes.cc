#include "files/sha256_lanes.h"

#include <immintrin.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace meshsync::files {
namespace {

const EVP_MD* Sha256Md() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

constexpr size_t kLanes = 16;
constexpr size_t kBlock = 64;

constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
constexpr uint32_t kInitial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

// The state of sixteen hashes, word-major: word[i][lane].
struct alignas(64) LaneState {
  uint32_t word[8][kLanes];
};

#define MESHSYNC_AVX512 __attribute__((target("avx512f,avx512bw")))

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*
// and then warn that it may be used uninitialized: not for the code below.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Turns sixteen rows (one lane's 64-byte block each) into sixteen columns
// (word j of every lane), the layout the rounds work on.
MESHSYNC_AVX512 inline void Transpose(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Each 128-bit quarter now holds a 4x4 transpose; move the quarters.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

// Runs `blocks` SHA-256 compressions in every lane: lane l reads its blocks
// from data[l], advancing by step[l] bytes (0 for an idle lane, which reads
// the same block again and whose state nobody reads).
MESHSYNC_AVX512 void CompressLanes(LaneState& state, const uint8_t* const data[kLanes],
                                   const size_t step[kLanes], size_t blocks) {
  // Ternary-logic truth tables: a ^ b ^ c, choose, majority.
  constexpr int kXor3 = 0x96, kChoose = 0xCA, kMajority = 0xE8;
  const __m512i swap_bytes = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
  __m512i s[8];
  for (int i = 0; i < 8; ++i) s[i] = _mm512_load_si512(state.word[i]);
  const uint8_t* next[kLanes];
  std::copy(data, data + kLanes, next);
  for (size_t b = 0; b < blocks; ++b) {
    __m512i w[16];
    for (size_t l = 0; l < kLanes; ++l) {
      w[l] = _mm512_loadu_si512(next[l]);
      next[l] += step[l];
    }
    Transpose(w);
    for (__m512i& x : w) x = _mm512_shuffle_epi8(x, swap_bytes);
    __m512i a = s[0], b1 = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    for (int t = 0; t < 64; ++t) {
      __m512i wt;
      if (t < 16) {
        wt = w[t];
      } else {
        const __m512i w2 = w[(t - 2) & 15], w15 = w[(t - 15) & 15];
        const __m512i s1 = _mm512_ternarylogic_epi32(
            _mm512_ror_epi32(w2, 17), _mm512_ror_epi32(w2, 19), _mm512_srli_epi32(w2, 10), kXor3);
        const __m512i s0 = _mm512_ternarylogic_epi32(
            _mm512_ror_epi32(w15, 7), _mm512_ror_epi32(w15, 18), _mm512_srli_epi32(w15, 3), kXor3);
        wt = _mm512_add_epi32(_mm512_add_epi32(s1, w[(t - 7) & 15]),
                              _mm512_add_epi32(s0, w[t & 15]));
        w[t & 15] = wt;
      }
      const __m512i big_s1 = _mm512_ternarylogic_epi32(
          _mm512_ror_epi32(e, 6), _mm512_ror_epi32(e, 11), _mm512_ror_epi32(e, 25), kXor3);
      const __m512i choose = _mm512_ternarylogic_epi32(e, f, g, kChoose);
      const __m512i t1 = _mm512_add_epi32(
          _mm512_add_epi32(h, big_s1),
          _mm512_add_epi32(choose,
                           _mm512_add_epi32(wt, _mm512_set1_epi32(static_cast<int>(kRound[t])))));
      const __m512i big_s0 = _mm512_ternarylogic_epi32(
          _mm512_ror_epi32(a, 2), _mm512_ror_epi32(a, 13), _mm512_ror_epi32(a, 22), kXor3);
      const __m512i majority = _mm512_ternarylogic_epi32(a, b1, c, kMajority);
      h = g;
      g = f;
      f = e;
      e = _mm512_add_epi32(d, t1);
      d = c;
      c = b1;
      b1 = a;
      a = _mm512_add_epi32(t1, _mm512_add_epi32(big_s0, majority));
    }
    s[0] = _mm512_add_epi32(s[0], a);
    s[1] = _mm512_add_epi32(s[1], b1);
    s[2] = _mm512_add_epi32(s[2], c);
    s[3] = _mm512_add_epi32(s[3], d);
    s[4] = _mm512_add_epi32(s[4], e);
    s[5] = _mm512_add_epi32(s[5], f);
    s[6] = _mm512_add_epi32(s[6], g);
    s[7] = _mm512_add_epi32(s[7], h);
  }
  for (int i = 0; i < 8; ++i) _mm512_store_si512(state.word[i], s[i]);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool HaveLanes() {
  static const bool have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return have;
}

// One range in a lane: its whole blocks, read where they are, then the last
// partial block with SHA-256's padding and length (one or two blocks),
// copied into `tail`.
struct Lane {
  size_t range = 0;
  bool busy = false;
  bool in_tail = false;
  const uint8_t* next = nullptr;
  size_t blocks_left = 0;
  size_t tail_blocks = 0;
  uint8_t tail[2 * kBlock] = {};
};

void Start(Lane& lane, size_t range, const ByteSpan& bytes, LaneState& state, size_t l) {
  lane.range = range;
  lane.busy = true;
  const size_t whole = bytes.size / kBlock;
  const size_t rest = bytes.size % kBlock;
  std::memset(lane.tail, 0, sizeof(lane.tail));
  if (rest > 0) std::memcpy(lane.tail, bytes.data + whole * kBlock, rest);
  lane.tail[rest] = 0x80;
  lane.tail_blocks = rest + 1 + 8 <= kBlock ? 1 : 2;
  const uint64_t bits = static_cast<uint64_t>(bytes.size) * 8;
  for (size_t i = 0; i < 8; ++i) {
    lane.tail[lane.tail_blocks * kBlock - 1 - i] = static_cast<uint8_t>(bits >> (8 * i));
  }
  lane.in_tail = whole == 0;
  lane.next = whole == 0 ? lane.tail : bytes.data;
  lane.blocks_left = whole == 0 ? lane.tail_blocks : whole;
  for (size_t i = 0; i < 8; ++i) state.word[i][l] = kInitial[i];
}

}  // namespace

Sha256 HashBytes(const void* data, size_t size) {
  Sha256 out{};
  unsigned int len = 0;
  EVP_Digest(data, size, out.data(), &len, Sha256Md(), nullptr);
  return out;
}

bool HashRangesInLanes(std::span<const ByteSpan> ranges, std::span<Sha256> out) {
  if (!HaveLanes()) return false;
  // Longest first: each lane takes the next range when it is done, so the
  // lanes finish close together and few idle at the end.
  std::vector<size_t> order(ranges.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return ranges[x].size > ranges[y].size; });
  size_t taken = 0;
  LaneState state;
  Lane lanes[kLanes];
  static const uint8_t kIdleBlock[kBlock] = {};
  for (size_t l = 0; l < kLanes && taken < order.size(); ++l, ++taken) {
    Start(lanes[l], order[taken], ranges[order[taken]], state, l);
  }
  while (true) {
    size_t blocks = SIZE_MAX;
    for (const Lane& lane : lanes) {
      if (lane.busy) blocks = std::min(blocks, lane.blocks_left);
    }
    if (blocks == SIZE_MAX) break;  // every lane idle: all done
    const uint8_t* data[kLanes];
    size_t step[kLanes];
    for (size_t l = 0; l < kLanes; ++l) {
      data[l] = lanes[l].busy ? lanes[l].next : kIdleBlock;
      step[l] = lanes[l].busy ? kBlock : 0;
    }
    CompressLanes(state, data, step, blocks);
    for (size_t l = 0; l < kLanes; ++l) {
      Lane& lane = lanes[l];
      if (!lane.busy) continue;
      lane.next += blocks * kBlock;
      lane.blocks_left -= blocks;
      if (lane.blocks_left > 0) continue;
      if (!lane.in_tail) {
        lane.in_tail = true;
        lane.next = lane.tail;
        lane.blocks_left = lane.tail_blocks;
        continue;
      }
      Sha256& digest = out[lane.range];
      for (size_t i = 0; i < 8; ++i) {
        const uint32_t v = state.word[i][l];
        digest[4 * i] = static_cast<uint8_t>(v >> 24);
        digest[4 * i + 1] = static_cast<uint8_t>(v >> 16);
        digest[4 * i + 2] = static_cast<uint8_t>(v >> 8);
        digest[4 * i + 3] = static_cast<uint8_t>(v);
      }
      lane.busy = false;
      if (taken < order.size()) {
        Start(lane, order[taken], ranges[order[taken]], state, l);
        ++taken;
      }
    }
  }
  return true;
}

void HashRanges(std::span<const ByteSpan> ranges, std::span<Sha256> out) {
  // Lanes pay when on average about half of them are busy: one lane step
  // costs about what OpenSSL takes for eight blocks. The lanes cannot
  // finish before the longest range, so it takes eight times the longest
  // range's bytes in all to fill them.
  size_t total = 0, longest = 0;
  for (const ByteSpan& r : ranges) {
    total += r.size;
    longest = std::max(longest, r.size);
  }
  if (total >= 8 * longest + 8 * kBlock && HashRangesInLanes(ranges, out)) return;
  for (size_t i = 0; i < ranges.size(); ++i) out[i] = HashBytes(ranges[i].data, ranges[i].size);
}

}  // namespace meshsync::files
