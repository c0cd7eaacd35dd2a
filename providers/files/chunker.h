// Content-defined chunking and hashing of file data.
//
// A file's content is described by a list of chunks, each a length and the
// SHA-256 of its bytes. Chunk boundaries come from a gear rolling hash
// (FastCDC with normalised chunking: 16 KiB minimum, 64 KiB average, 256 KiB
// maximum), so an edit in the middle of a large file changes the chunks
// around the edit only. Files are cut at every kSegmentBytes as well, which
// lets the segments of one large file be hashed on several cores; the cut
// points stay deterministic.
#ifndef MESHSYNC_PROVIDERS_FILES_CHUNKER_H_
#define MESHSYNC_PROVIDERS_FILES_CHUNKER_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "files/sha256_lanes.h"
#include "meshsync/status.h"

namespace meshsync::files {

struct Chunk {
  uint32_t length = 0;
  Sha256 hash{};
  friend bool operator==(const Chunk&, const Chunk&) = default;
};

inline constexpr uint64_t kSegmentBytes = 8u << 20;

// The chunks of bytes [data, data + size) of one segment.
void ChunkBuffer(const uint8_t* data, size_t size, std::vector<Chunk>& out);

// One file to hash: an open descriptor and the size it had when stat'ed.
struct HashJob {
  int fd = -1;
  uint64_t size = 0;
  std::vector<Chunk> chunks;  // the result
  Status status;              // kUnavailable if the file is shorter than `size`
};

// Chunks every job's file, spreading segments over `threads` threads.
void HashFiles(std::vector<HashJob>& jobs, unsigned threads);

// A digest of the whole content: the chunk's hash for one chunk, else the
// SHA-256 of the chunk hashes. Files with equal digests have equal bytes.
Sha256 ContentDigest(const std::vector<Chunk>& chunks);

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_CHUNKER_H_
