// SHA-256 of many byte ranges at once.
//
// OpenSSL hashes one message at a time; with the CPU's SHA extensions that
// is about 1.7 GB/s per core on this project's machines, and hashing is most
// of what a sync of large files costs. A file's chunks are independent
// messages, so where the CPU has AVX-512 they are hashed sixteen side by
// side, one in each 32-bit lane of the vector registers: 1.75-1.95 times the
// throughput (bench/chunk_bench). The digests are plain SHA-256, the same
// bytes OpenSSL gives.
//
// Stateless and thread-safe.
#ifndef MESHSYNC_PROVIDERS_FILES_SHA256_LANES_H_
#define MESHSYNC_PROVIDERS_FILES_SHA256_LANES_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace meshsync::files {

using Sha256 = std::array<uint8_t, 32>;

struct ByteSpan {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// One SHA-256 with OpenSSL.
Sha256 HashBytes(const void* data, size_t size);

// out[i] = the SHA-256 of ranges[i]; out.size() must equal ranges.size().
// In lanes where the CPU has them and there are enough ranges to fill them,
// else one range after another.
void HashRanges(std::span<const ByteSpan> ranges, std::span<Sha256> out);

// The same, always in lanes, for tests and benchmarks. Returns false and
// writes nothing where the CPU lacks AVX-512.
bool HashRangesInLanes(std::span<const ByteSpan> ranges, std::span<Sha256> out);

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_SHA256_LANES_H_
