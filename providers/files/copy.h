// Copying a file's bytes into a new file on the same machine.
//
// The cheapest way that works, in order:
// - copy_file_range, in the kernel: on file systems that share extents
//   (Btrfs, XFS) it makes a reflink and writes no data; elsewhere it copies
//   through the page cache;
// - for a large file, once the page cache shows itself slow to grow,
//   direct writes (O_DIRECT) for the rest, several blocks in flight. New
//   page cache is a memory copy when the kernel reuses pages freed moments
//   before; on a virtual machine whose free memory went back to the host it
//   costs ten times that (writing 256 MiB into it took 0.55 s here, against
//   0.05 s with reused pages and 0.1 s written direct). Direct writes also
//   leave other programs' cached data alone.
#ifndef MESHSYNC_PROVIDERS_FILES_COPY_H_
#define MESHSYNC_PROVIDERS_FILES_COPY_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>

#include "meshsync/status.h"

namespace meshsync::files {

// Reads exactly out.size() bytes at `offset`. False on a read error (errno
// says which) or at the end of the file (errno 0).
bool ReadFull(int fd, std::span<char> out, uint64_t offset);

enum class CopyMethod { kDirect, kKernel };

// How a large file may be copied: kAuto decides as it goes (above). The
// others are for tests, which must not depend on the machine's timing:
// kPageCache takes the page cache as always fast, kDirect as always slow
// (its first window goes through it, the rest direct, as kAuto's would).
enum class CopyMode { kAuto, kPageCache, kDirect };

// Files smaller than this always go through the page cache.
inline constexpr uint64_t kDirectCopyMinBytes = 8u << 20;

// Copies the first `size` bytes of `in` into `out`, a new empty file open
// for reading and writing, and leaves `out` exactly `size` bytes long.
// Returns how it copied (kDirect if any part was written direct).
// kUnavailable if `in` holds fewer than `size` bytes (it shrank while being
// copied) or a read or write fails; `out` then holds an unspecified prefix
// and should be discarded. Runs up to four threads of its own for a large
// file; `in` and `out` must stay open until it returns.
Result<CopyMethod> CopyFileData(int in, int out, uint64_t size, CopyMode mode = CopyMode::kAuto);

// Writes a file front to back, from bytes that arrive in pieces of any size
// (chunks received from a peer), in 2 MiB blocks: through the page cache
// and, as CopyFileData does, around it from the first block that shows the
// page cache slow, where the file system allows (CopyMode says the same).
//
// Not thread-safe. The file descriptor is borrowed; while the writer is in
// use nothing else may write to it.
class SequentialWriter {
 public:
  // Writes to `fd` (open for reading and writing) from offset `start`; the
  // bytes before `start` are kept. `length`, the bytes the caller means to
  // append, sizes the buffer (2 MiB at most); appending more still works.
  SequentialWriter(int fd, uint64_t start, uint64_t length, CopyMode mode);
  SequentialWriter(const SequentialWriter&) = delete;
  SequentialWriter& operator=(const SequentialWriter&) = delete;
  // Leaves the descriptor's flags as they were; writes nothing (see Finish).
  ~SequentialWriter();

  // Appends `size` bytes. kUnavailable if a write fails.
  Status Append(const char* data, size_t size);
  // Appends `length` bytes of the file `in` from `offset`, copied in the
  // kernel (copy_file_range: a reflink where the file system shares
  // extents, else through the page cache) rather than through this
  // process; by hand where the kernel will not. kUnavailable if `in` holds
  // fewer bytes, or a read or write fails.
  Status AppendCopy(int in, uint64_t offset, uint64_t length);
  // Writes what is buffered and makes the file exactly as long as what was
  // written (`start` plus every byte appended). Call it after a failure
  // too: after the caller's, everything appended is kept; after a failed
  // write of the writer's own, the blocks written before it.
  Status Finish();

  bool direct() const { return direct_; }

 private:
  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };
  Status WriteBlock(size_t length);
  void StartDirect();
  void StopDirect();

  int fd_;
  CopyMode mode_;
  int flags_ = -1;  // the descriptor's own, restored when done
  bool direct_ = false;
  uint64_t start_ = 0;
  uint64_t base_ = 0;    // the file offset of buffer_[0]; aligned when direct_
  size_t capacity_ = 0;  // of buffer_: a multiple of the alignment
  size_t used_ = 0;      // bytes in buffer_
  std::unique_ptr<char, FreeDeleter> buffer_;
  Status status_;  // the first failure, if any
};

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_COPY_H_
