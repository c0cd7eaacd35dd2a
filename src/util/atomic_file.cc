#include "meshsync/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace meshsync {
namespace {

std::string DirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Status Errno(const std::string& what) {
  return UnavailableError(what + ": " + std::strerror(errno));
}

}  // namespace

Result<AtomicFile> AtomicFile::Create(std::string path, mode_t mode, std::string temp_dir) {
  if (temp_dir.empty()) temp_dir = DirectoryOf(path);
  std::string temp = temp_dir + "/." + BaseName(path) + ".tmp-XXXXXX";
  int fd = mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return Errno("cannot create a temporary file for " + path);
  return AtomicFile(std::move(path), std::move(temp), fd, mode);
}

AtomicFile::AtomicFile(std::string path, std::string temp, int fd, mode_t mode)
    : path_(std::move(path)), temp_(std::move(temp)), fd_(fd), mode_(mode) {}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_(std::move(other.temp_)),
      fd_(std::exchange(other.fd_, -1)),
      mode_(other.mode_),
      error_(std::move(other.error_)) {
  other.temp_.clear();
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) close(fd_);
  if (!temp_.empty()) unlink(temp_.c_str());
}

Status AtomicFile::Append(std::string_view bytes) {
  if (fd_ < 0) return FailedPreconditionError("append to a closed file " + path_);
  while (!bytes.empty() && error_.ok()) {
    ssize_t n = write(fd_, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error_ = Errno("cannot write " + temp_);
    } else {
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  return error_;
}

Status AtomicFile::Commit() {
  if (fd_ < 0) return FailedPreconditionError("commit of a closed file " + path_);
  if (error_.ok() && fchmod(fd_, mode_) != 0) error_ = Errno("cannot set the mode of " + temp_);
  if (error_.ok() && fsync(fd_) != 0) error_ = Errno("cannot flush " + temp_);
  if (close(std::exchange(fd_, -1)) != 0 && error_.ok()) error_ = Errno("cannot close " + temp_);
  if (error_.ok() && std::rename(temp_.c_str(), path_.c_str()) != 0) {
    error_ = Errno("cannot replace " + path_);
  }
  if (!error_.ok()) return error_;  // the destructor removes the temporary file
  temp_.clear();
  int dir = open(DirectoryOf(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    fsync(dir);
    close(dir);
  }
  return Status::Ok();
}

Status WriteFileAtomically(const std::string& path, std::string_view bytes, mode_t mode) {
  auto file = AtomicFile::Create(path, mode);
  if (!file.ok()) return file.status();
  MESHSYNC_RETURN_IF_ERROR(file->Append(bytes));
  return file->Commit();
}

}  // namespace meshsync
