// Writing a file so that readers, and the file system after a crash, see
// its old content or its new content, never a part: the bytes go to a
// temporary file, which is flushed and then renamed over the target, and
// the rename is flushed with its directory.
//
//   auto file = AtomicFile::Create(path, 0644);
//   if (!file.ok()) return file.status();
//   MESHSYNC_RETURN_IF_ERROR(file->Append(bytes));  // any number of times
//   return file->Commit();
//
// An AtomicFile that is destroyed without a successful Commit removes its
// temporary file: the target is untouched. Thread-compatible.
#ifndef MESHSYNC_ATOMIC_FILE_H_
#define MESHSYNC_ATOMIC_FILE_H_

#include <sys/types.h>

#include <string>
#include <string_view>

#include "meshsync/status.h"

namespace meshsync {

class AtomicFile {
 public:
  // Creates the temporary file in `temp_dir` (which must be on the same
  // file system as `path`), or next to `path` when it is empty. The file
  // gets `mode` when committed.
  static Result<AtomicFile> Create(std::string path, mode_t mode, std::string temp_dir = "");

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  Status Append(std::string_view bytes);
  // Flushes, renames over the target and flushes its directory. The first
  // error of Append is reported here too.
  Status Commit();

 private:
  AtomicFile(std::string path, std::string temp, int fd, mode_t mode);

  std::string path_;
  std::string temp_;
  int fd_ = -1;
  mode_t mode_;
  Status error_;
};

// The whole of `bytes` as the file at `path`, atomically (see above).
Status WriteFileAtomically(const std::string& path, std::string_view bytes, mode_t mode = 0600);

}  // namespace meshsync

#endif  // MESHSYNC_ATOMIC_FILE_H_
