#include "files/copy.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace meshsync::files {
namespace {

// Direct I/O wants buffers, offsets and lengths aligned to the device's
// logical block; 4 KiB covers every block device in use.
constexpr size_t kAlign = 4096;
constexpr size_t kBlock = 2u << 20;
// Writes in flight: one device queue takes several at once (four streams
// wrote 1 GiB here in half the time one did).
constexpr unsigned kWriters = 4;
// In CopyMode::kAuto a large file is copied through the page cache a window
// at a time for as long as each window goes at least this fast. New page
// cache is a memory copy (4-5 GB/s here) when the pages were freed moments
// before, but costs 0.45 GB/s on this VM when they come from memory the
// host has to supply; direct writes then do better (1-3.6 GB/s), though the
// next flush of the device waits for them.
constexpr uint64_t kProbeBytes = 8u << 20;
constexpr double kFastPageCacheBytesPerSecond = 1.0e9;

using Clock = std::chrono::steady_clock;

// Whether `bytes` written through the page cache since `start` show it slow
// to grow (kDirect: always, for tests).
bool PageCacheSlow(CopyMode mode, uint64_t bytes, Clock::time_point start) {
  if (mode == CopyMode::kDirect) return true;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return static_cast<double>(bytes) < seconds * kFastPageCacheBytesPerSecond;
}

constexpr uint64_t AlignUp(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string Errno(const char* what, int err) { return std::string(what) + ": " + strerror(err); }

bool WriteAt(int fd, const char* data, size_t length, uint64_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pwrite(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

Status ShrankOr(const char* what, int err) {
  if (err == 0) return UnavailableError("the source file shrank while it was copied");
  return UnavailableError(Errno(what, err));
}

// Copies `length` bytes of `in` from `from` to `out` at `to`, in the kernel
// (through the page cache, or a reflink); by hand where the kernel will not.
Status KernelCopy(int in, uint64_t from, int out, uint64_t to, uint64_t length) {
  loff_t in_off = static_cast<loff_t>(from);
  loff_t out_off = static_cast<loff_t>(to);
  const uint64_t end = from + length;
  while (static_cast<uint64_t>(in_off) < end) {
    ssize_t n = copy_file_range(in, &in_off, out, &out_off, end - static_cast<uint64_t>(in_off), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return ShrankOr("copy", 0);
    if (n < 0) {
      // Some file systems (and old kernels across them) refuse; copy by hand.
      if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS) {
        return UnavailableError(Errno("copy", errno));
      }
      std::vector<char> buffer(256u << 10);
      while (static_cast<uint64_t>(in_off) < end) {
        size_t piece = static_cast<size_t>(
            std::min<uint64_t>(buffer.size(), end - static_cast<uint64_t>(in_off)));
        if (!ReadFull(in, {buffer.data(), piece}, static_cast<uint64_t>(in_off))) {
          return ShrankOr("read", errno);
        }
        if (!WriteAt(out, buffer.data(), piece, static_cast<uint64_t>(out_off))) {
          return UnavailableError(Errno("write", errno));
        }
        in_off += static_cast<loff_t>(piece);
        out_off += static_cast<loff_t>(piece);
      }
      break;
    }
  }
  return Status::Ok();
}

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

enum class DirectOutcome { kCopied, kRefused, kFailed };

// Copies [begin, size) block by block from kWriters threads; `begin` is a
// multiple of kAlign and `out` has O_DIRECT set. kRefused if the file system turned a direct write
// down (the caller copies another way), kFailed with `error` set on any other failure.
DirectOutcome DirectCopy(int in, int out, uint64_t begin, uint64_t size, Status& error) {
  const uint64_t padded = AlignUp(size);
  // One allocation up front: extents in one piece, and writes inside the
  // file's size, which ext4 lets run side by side.
  if (fallocate(out, 0, static_cast<off_t>(begin), static_cast<off_t>(padded - begin)) != 0 &&
      errno != EOPNOTSUPP) {
    error = UnavailableError(Errno("cannot allocate the copy", errno));
    return DirectOutcome::kFailed;
  }
  const uint64_t blocks = (size - begin + kBlock - 1) / kBlock;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> refused{false};
  std::mutex mu;
  Status first_error;  // guarded by mu
  auto fail = [&](Status status) {
    std::lock_guard lock(mu);
    if (first_error.ok()) first_error = std::move(status);
    stop = true;
  };
  auto work = [&] {
    std::unique_ptr<char, FreeDeleter> buffer(
        static_cast<char*>(std::aligned_alloc(kAlign, kBlock)));
    if (buffer == nullptr) return fail(UnavailableError("out of memory for the copy"));
    while (!stop) {
      const uint64_t b = next.fetch_add(1);
      if (b >= blocks) return;
      const uint64_t offset = begin + b * kBlock;
      const size_t length = static_cast<size_t>(std::min<uint64_t>(kBlock, size - offset));
      if (!ReadFull(in, {buffer.get(), length}, offset)) return fail(ShrankOr("read", errno));
      const size_t aligned = static_cast<size_t>(AlignUp(length));
      std::memset(buffer.get() + length, 0, aligned - length);
      if (!WriteAt(out, buffer.get(), aligned, offset)) {
        if (errno == EINVAL) {
          // Not aligned as this file system wants it.
          refused = true;
          stop = true;
          return;
        }
        return fail(UnavailableError(Errno("write", errno)));
      }
    }
  };
  const unsigned threads = static_cast<unsigned>(std::min<uint64_t>(kWriters, blocks));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (refused) return DirectOutcome::kRefused;
  if (!first_error.ok()) {
    error = std::move(first_error);
    return DirectOutcome::kFailed;
  }
  return DirectOutcome::kCopied;
}

// Copies [begin, size) with direct writes; kRefused leaves `out` as it was
// before `begin` for the caller to go on through the page cache.
Result<DirectOutcome> CopyDirect(int in, int out, uint64_t begin, uint64_t size) {
  const int flags = fcntl(out, F_GETFL);
  if (flags < 0 || fcntl(out, F_SETFL, flags | O_DIRECT) != 0) return DirectOutcome::kRefused;
  Status error;
  DirectOutcome outcome = DirectCopy(in, out, begin, size, error);
  if (fcntl(out, F_SETFL, flags) != 0) return UnavailableError(Errno("temporary file", errno));
  if (outcome == DirectOutcome::kFailed) return error;
  // Refused: cut what the direct writes may have allocated past `begin`.
  const uint64_t end = outcome == DirectOutcome::kCopied ? size : begin;
  if (ftruncate(out, static_cast<off_t>(end)) != 0) {
    return UnavailableError(Errno("temporary file", errno));
  }
  return outcome;
}

}  // namespace

Result<CopyMethod> CopyFileData(int in, int out, uint64_t size, CopyMode mode) {
  if (size < kDirectCopyMinBytes || mode == CopyMode::kPageCache) {
    MESHSYNC_RETURN_IF_ERROR(KernelCopy(in, 0, out, 0, size));
    return CopyMethod::kKernel;
  }
  // Through the page cache while it grows fast; around it from the first
  // window that shows it does not (see kFastPageCacheBytesPerSecond).
  uint64_t done = 0;
  while (done < size) {
    const uint64_t end = std::min(size, done + kProbeBytes);
    const Clock::time_point start = Clock::now();
    MESHSYNC_RETURN_IF_ERROR(KernelCopy(in, done, out, done, end - done));
    const bool slow = PageCacheSlow(mode, end - done, start);
    done = end;
    if (slow) break;
  }
  if (done == size) return CopyMethod::kKernel;
  MESHSYNC_ASSIGN_OR_RETURN(DirectOutcome outcome, CopyDirect(in, out, done, size));
  if (outcome == DirectOutcome::kCopied) return CopyMethod::kDirect;
  MESHSYNC_RETURN_IF_ERROR(KernelCopy(in, done, out, done, size - done));
  return CopyMethod::kKernel;
}

SequentialWriter::SequentialWriter(int fd, uint64_t start, uint64_t length, CopyMode mode)
    : fd_(fd), mode_(mode) {
  // A small file needs no more than its size (rounded for alignment).
  capacity_ =
      static_cast<size_t>(std::min<uint64_t>(kBlock, AlignUp(std::max<uint64_t>(length, 1))));
  buffer_.reset(static_cast<char*>(std::aligned_alloc(kAlign, capacity_)));
  base_ = start_ = start;
  if (buffer_ == nullptr) {
    status_ = UnavailableError("out of memory for writing a file");
    return;
  }
}

void SequentialWriter::StartDirect() {
  // The block holding base_ is written whole: read its head first. The
  // buffer is empty when this is called.
  const uint64_t aligned = base_ / kAlign * kAlign;
  const size_t head = static_cast<size_t>(base_ - aligned);
  if (head > 0 && !ReadFull(fd_, {buffer_.get(), head}, aligned)) return;
  flags_ = fcntl(fd_, F_GETFL);
  if (flags_ < 0 || fcntl(fd_, F_SETFL, flags_ | O_DIRECT) != 0) return;
  direct_ = true;
  base_ = aligned;
  used_ = head;
}

SequentialWriter::~SequentialWriter() { StopDirect(); }

void SequentialWriter::StopDirect() {
  if (direct_) (void)fcntl(fd_, F_SETFL, flags_);
  direct_ = false;
}

Status SequentialWriter::WriteBlock(size_t length) {
  if (direct_) {
    const size_t aligned = static_cast<size_t>(AlignUp(length));
    std::memset(buffer_.get() + length, 0, aligned - length);
    if (WriteAt(fd_, buffer_.get(), aligned, base_)) return Status::Ok();
    if (errno != EINVAL) return UnavailableError(Errno("write", errno));
    // Not aligned as this file system wants it: the page cache from now on.
    StopDirect();
    mode_ = CopyMode::kPageCache;
  }
  if (!WriteAt(fd_, buffer_.get(), length, base_)) return UnavailableError(Errno("write", errno));
  return Status::Ok();
}

Status SequentialWriter::Append(const char* data, size_t size) {
  if (!status_.ok()) return status_;
  while (size > 0) {
    const size_t n = std::min(size, capacity_ - used_);
    std::memcpy(buffer_.get() + used_, data, n);
    used_ += n;
    data += n;
    size -= n;
    if (used_ == capacity_) {
      const bool probe = !direct_ && mode_ != CopyMode::kPageCache;
      const Clock::time_point start = Clock::now();
      status_ = WriteBlock(capacity_);
      if (!status_.ok()) return status_;
      base_ += capacity_;
      used_ = 0;
      // Around the page cache from the first block that shows it slow.
      if (probe && PageCacheSlow(mode_, capacity_, start)) StartDirect();
    }
  }
  return Status::Ok();
}

Status SequentialWriter::AppendCopy(int in, uint64_t offset, uint64_t length) {
  if (!status_.ok()) return status_;
  // What is buffered goes first; the copy then writes through the page
  // cache (Append may go around it again later, from a block of its own).
  if (used_ > 0) {
    status_ = WriteBlock(used_);
    if (!status_.ok()) return status_;
    base_ += used_;
    used_ = 0;
  }
  StopDirect();
  status_ = KernelCopy(in, offset, fd_, base_, length);
  if (status_.ok()) base_ += length;
  return status_;
}

Status SequentialWriter::Finish() {
  if (buffer_ == nullptr) return status_;
  if (status_.ok() && used_ > 0) status_ = WriteBlock(used_);
  if (status_.ok()) {
    base_ += used_;
    used_ = 0;
  }
  // After a failure the file keeps the blocks written before it (and what
  // it had before `start`, which the first block began with).
  StopDirect();
  if (ftruncate(fd_, static_cast<off_t>(std::max(base_, start_))) != 0 && status_.ok()) {
    status_ = UnavailableError(Errno("write", errno));
  }
  return status_;
}

bool ReadFull(int fd, std::span<char> out, uint64_t offset) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = 0;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace meshsync::files
