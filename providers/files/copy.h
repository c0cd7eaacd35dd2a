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

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_COPY_H_
