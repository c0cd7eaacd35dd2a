// Copying a file's bytes into a new file on the same machine.
//
// Three ways, the cheapest that works first:
// - a reflink (FICLONE): on file systems that share extents (Btrfs, XFS)
//   the copy writes no data at all;
// - for large files, reads through the page cache and writes around it
//   (O_DIRECT), several blocks in flight. The copy then takes no page cache
//   of its own: it neither evicts what other programs have cached nor pays
//   for fresh pages, which on a virtual machine whose free memory is handed
//   back to the host costs more than the device write (writing 256 MiB into
//   new page cache took 0.55 s here, writing it to the device 0.1-0.25 s);
// - copy_file_range, in the kernel through the page cache, for small files
//   and for file systems that refuse direct I/O.
#ifndef MESHSYNC_PROVIDERS_FILES_COPY_H_
#define MESHSYNC_PROVIDERS_FILES_COPY_H_

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "meshsync/status.h"

namespace meshsync::files {

enum class CopyMethod { kReflink, kDirect, kKernel };

// Files this large or larger are written with direct I/O where the file
// system takes it.
inline constexpr uint64_t kDirectCopyMinBytes = 8u << 20;

// Copies the first `size` bytes of `in` into `out`, a new empty file open
// for reading and writing, and leaves `out` exactly `size` bytes long.
// Returns how it copied. kUnavailable if `in` holds fewer than `size` bytes
// (it shrank while being copied) or a read or write fails; `out` then holds
// an unspecified prefix and should be discarded. Runs up to four threads of
// its own for a large file; `in` and `out` must stay open until it returns.
Result<CopyMethod> CopyFileData(int in, int out, uint64_t size);

// Writes a file front to back, from bytes that arrive in pieces of any size
// (chunks received from a peer), in large aligned blocks: around the page
// cache when asked for and the file system allows it, through it otherwise.
//
// Not thread-safe. The file descriptor is borrowed; while the writer is in
// use nothing else may write to it.
class SequentialWriter {
 public:
  // Writes to `fd` (open for reading and writing) from offset `start`; the
  // bytes before `start` are kept. With `direct`, tries direct I/O.
  SequentialWriter(int fd, uint64_t start, bool direct);
  SequentialWriter(const SequentialWriter&) = delete;
  SequentialWriter& operator=(const SequentialWriter&) = delete;
  // Leaves the descriptor's flags as they were; writes nothing (see Finish).
  ~SequentialWriter();

  // Appends `size` bytes. kUnavailable if a write fails.
  Status Append(const char* data, size_t size);
  // Writes what is buffered and makes the file exactly as long as what was
  // written (`start` plus every byte appended). Call it after a failure too:
  // what was appended before then is kept.
  Status Finish();

  bool direct() const { return direct_; }

 private:
  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };
  Status WriteBlock(size_t length);
  void StopDirect();

  int fd_;
  int flags_ = -1;  // the descriptor's own, restored when done
  bool direct_ = false;
  uint64_t start_ = 0;
  uint64_t base_ = 0;  // the file offset of buffer_[0]; aligned when direct_
  size_t used_ = 0;    // bytes in buffer_
  std::unique_ptr<char, FreeDeleter> buffer_;
  Status status_;  // the first failure, if any
};

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_COPY_H_
