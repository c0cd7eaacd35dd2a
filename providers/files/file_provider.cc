#include "files/file_provider.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <thread>
#include <unordered_set>

#include "files/copy.h"
#include "meshsync/env.h"

namespace meshsync::files {
namespace {

constexpr uint32_t kMaxDepth = 4096;

// Files at least this large, fetched from another replica, are written to a
// partial file named after their content (kPartialPrefix...) and kept there
// if the transfer breaks, so that the next attempt resumes it.
constexpr uint64_t kResumableBytes = 1u << 20;
// Files at least this large are trusted sources of the chunk index
// (FileProvider::TrustedSource); smaller ones are read and hashed.
constexpr uint64_t kTrustedSourceBytes = 1u << 20;
// Files at least this large, fetched from another replica, look for their
// chunks in other folders too (ChunkFinder). The first look loads those
// folders' indexes, which costs more than fetching a small file (and would
// delay the one-file change a node passes on in tens of milliseconds).
constexpr uint64_t kLookElsewhereBytes = 1u << 20;
constexpr std::string_view kPartialPrefix = "p-";
constexpr int64_t kPartialKeepSeconds = 24 * 3600;

std::string PartialName(const std::vector<Chunk>& chunks, uint64_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  Sha256 digest = ContentDigest(chunks);
  std::string name(kPartialPrefix);
  for (size_t i = 0; i < 16; ++i) {
    name.push_back(kHex[digest[i] >> 4]);
    name.push_back(kHex[digest[i] & 15]);
  }
  return name + "-" + std::to_string(size);
}

uint64_t ChunkKey(const Sha256& hash) {
  uint64_t key;
  std::memcpy(&key, hash.data(), sizeof key);
  return key;
}

// The next 8 bytes: with the key, 128 bits of the hash, so that a chunk
// copied without being read (a trusted source) is the one asked for.
uint64_t ChunkCheck(const Sha256& hash) {
  uint64_t check;
  std::memcpy(&check, hash.data() + 8, sizeof check);
  return check;
}

std::string Errno(std::string_view what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

// Closes a descriptor when it goes out of scope.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// The times argument of futimens/utimensat that sets the mtime only.
struct MtimeOnly {
  explicit MtimeOnly(int64_t ns) {
    times[0].tv_sec = 0;
    times[0].tv_nsec = UTIME_OMIT;
    times[1].tv_sec = ns / 1'000'000'000;
    times[1].tv_nsec = ns % 1'000'000'000;
    if (times[1].tv_nsec < 0) {  // before 1970
      times[1].tv_nsec += 1'000'000'000;
      --times[1].tv_sec;
    }
  }
  struct timespec times[2];
};

Status SetModeAndTime(int fd, uint32_t mode, int64_t mtime_ns) {
  MtimeOnly times(mtime_ns);
  if (fchmod(fd, mode) != 0 || futimens(fd, times.times) != 0) {
    return UnavailableError(Errno("cannot set the file's mode or time", errno));
  }
  return Status::Ok();
}

// A file being written, to be named `name` in the temporary folder
// `tmp_fd`. Made unnamed (O_TMPFILE) in `near`, the folder it is going to,
// when it can be, so that the file system places its inode with that
// folder's (on ext4, 10,000 files made in one folder and moved to 100 took
// 2.1 s where made in place they took 1.5 s), and linked into the
// temporary folder once complete (Finish): nothing is left if it is
// abandoned; or, when the caller knows where it goes and nothing is there,
// linked there at once (Finish with a place), which spares a rename from the
// temporary folder (bench/new_files_bench: 10,000 files in 0.21 s against
// 0.26 s here; 0.86-1.4 s against 1.1-1.8 s when the file system had to
// look harder for free inodes). Otherwise named
// from the start, and removed if abandoned. One thread per file; several
// may make files at once.
class NewFile {
 public:
  NewFile(int tmp_fd, std::string name, int near, bool try_tmpfile)
      : tmp_fd_(tmp_fd), near_(near), name_(std::move(name)) {
    if (near >= 0 && try_tmpfile) {
      fd_ = Fd(openat(near, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
      unnamed_ = fd_.get() >= 0;
      tmpfile_failed_ = !unnamed_;
    }
    if (!unnamed_) {
      fd_ = Fd(openat(tmp_fd_, name_.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
    }
  }
  NewFile(const NewFile&) = delete;
  NewFile& operator=(const NewFile&) = delete;
  ~NewFile() {
    if (fd_.get() >= 0 && !unnamed_ && !finished_) unlinkat(tmp_fd_, name_.c_str(), 0);
  }

  int fd() const { return fd_.get(); }
  // O_TMPFILE, or naming through /proc, does not work here.
  bool tmpfile_failed() const { return tmpfile_failed_; }

  // The file is complete: it keeps its name. Or, if it is unnamed and
  // `place` is given, it is linked as `place` in the folder it was made in
  // (placed()); kUnavailable, naming it `rel`, if that name is taken.
  Status Finish(const std::string* place = nullptr, std::string_view rel = {}) {
    if (unnamed_) {
      // Named through /proc (linkat with AT_EMPTY_PATH needs a capability).
      std::string self = "/proc/self/fd/" + std::to_string(fd_.get());
      const int dir = place != nullptr ? near_ : tmp_fd_;
      const std::string& name = place != nullptr ? *place : name_;
      if (linkat(AT_FDCWD, self.c_str(), dir, name.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        int err = errno;
        if (place != nullptr && err == EEXIST) {
          return UnavailableError(std::string(rel) +
                                  " appeared since the last scan; will sync next time");
        }
        tmpfile_failed_ = err == ENOENT || err == EACCES || err == EPERM || err == ENOTDIR;
        return UnavailableError(Errno("cannot name a temporary file", err));
      }
      placed_ = place != nullptr;
    }
    finished_ = true;
    return Status::Ok();
  }
  bool placed() const { return placed_; }

 private:
  int tmp_fd_;
  int near_;
  std::string name_;
  Fd fd_;
  bool unnamed_ = false;
  bool tmpfile_failed_ = false;
  bool finished_ = false;
  bool placed_ = false;
};

int64_t Nanos(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::optional<Kind> KindOf(mode_t mode) {
  if (S_ISREG(mode)) return Kind::kFile;
  if (S_ISDIR(mode)) return Kind::kDirectory;
  if (S_ISLNK(mode)) return Kind::kSymlink;
  return std::nullopt;
}

void FillStat(const struct stat& st, EntryState& s) {
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.size = s.kind == Kind::kFile ? static_cast<uint64_t>(st.st_size) : 0;
  s.mtime_ns = s.kind == Kind::kFile ? Nanos(st.st_mtim) : 0;
  s.ctime_ns = Nanos(st.st_ctim);
  s.mode = s.kind == Kind::kSymlink ? 0777 : (st.st_mode & 07777);
}

// A file modified within this long of being stat'ed may be modified again
// within the file system's timestamp granularity without its size or mtime
// changing ("racy git"). Its cached ctime is then stored as 0, so the next
// scan re-reads it instead of trusting the cache.
constexpr int64_t kRacyNanos = 2'000'000'000;

void MarkRacy(EntryState& s) {
  if (s.kind != Kind::kFile) return;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  if (Nanos(now) - s.mtime_ns < kRacyNanos) s.ctime_ns = 0;
}

// Same file, same bytes as when it was detected (a cheap check).
bool SameFile(const struct stat& st, const EntryState& s) {
  return st.st_ino == s.ino && st.st_dev == s.dev &&
         (s.kind != Kind::kFile ||
          (static_cast<uint64_t>(st.st_size) == s.size && Nanos(st.st_mtim) == s.mtime_ns));
}

uint64_t DigestWord(const std::vector<Chunk>& chunks) {
  if (chunks.empty()) return 0;
  Sha256 d = ContentDigest(chunks);
  uint64_t w = 0;
  for (int i = 0; i < 8; ++i) w = w << 8 | d[i];
  return w;
}

uint64_t KeyHash(const ItemId& parent, std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull ^ parent.hi ^ (parent.lo * 0x9E3779B97F4A7C15ull);
  for (char c : name) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string Join(const std::string& dir, std::string_view name) {
  return dir.empty() ? std::string(name) : dir + "/" + std::string(name);
}

std::string DirName(const std::string& rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

std::string BaseName(const std::string& rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string::npos ? rel : rel.substr(slash + 1);
}

Status ReadSymlink(int dir_fd, const std::string& name, std::string& target) {
  char buf[4097];
  ssize_t n = readlinkat(dir_fd, name.c_str(), buf, sizeof buf);
  if (n < 0) return UnavailableError(Errno("readlink", errno));
  if (n == 0 || n > 4096) return UnavailableError("symlink target too long");
  target.assign(buf, static_cast<size_t>(n));
  return Status::Ok();
}

// A local file's bytes, as detected.
class LocalFileReader final : public DataReader {
 public:
  LocalFileReader(Fd fd, EntryState expected)
      : fd_(std::move(fd)), expected_(std::move(expected)) {}
  uint64_t size() const override { return expected_.size; }
  Status ReadAt(uint64_t offset, std::span<char> out) override {
    if (offset + out.size() > expected_.size) return InvalidArgumentError("read past the end");
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n =
          pread(fd_.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return UnavailableError(n == 0 ? "file shrank while read" : Errno("read", errno));
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }
  int LocalFd() const override { return fd_.get(); }
  Status Verify() override {
    struct stat st;
    if (fstat(fd_.get(), &st) != 0) return UnavailableError(Errno("stat", errno));
    if (!SameFile(st, expected_)) return UnavailableError("the file changed while it was copied");
    return Status::Ok();
  }

 private:
  Fd fd_;
  EntryState expected_;
};

Result<uint32_t> DecodeMode(std::string_view data) {
  uint32_t mode = 0;
  int shift = 0;
  for (char c : data) {
    if (shift > 14) return DataLossError("malformed attributes unit");
    mode |= static_cast<uint32_t>(static_cast<uint8_t>(c) & 0x7f) << shift;
    shift += 7;
    if ((static_cast<uint8_t>(c) & 0x80) == 0) {
      if (mode > 07777 || (shift > 7 && c == 0) || data.size() != static_cast<size_t>(shift / 7)) {
        return DataLossError("malformed attributes unit");
      }
      return mode;
    }
  }
  return DataLossError("malformed attributes unit");
}

std::string EncodeMode(uint32_t mode) {
  std::string out;
  while (mode >= 0x80) {
    out.push_back(static_cast<char>(mode | 0x80));
    mode >>= 7;
  }
  out.push_back(static_cast<char>(mode));
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Opening and the index.

FileProvider::FileProvider(std::string root, MetadataStore& store, FileProviderOptions options)
    : root_(std::move(root)),
      store_(store),
      options_(std::move(options)),
      pid_(std::to_string(getpid())) {
  if (options_.hash_threads == 0) {
    options_.hash_threads = std::max(1u, std::thread::hardware_concurrency());
  }
}

FileProvider::~FileProvider() {
  if (root_fd_ >= 0) ::close(root_fd_);
  if (tmp_fd_ >= 0) ::close(tmp_fd_);
}

Result<std::unique_ptr<FileProvider>> FileProvider::Open(const std::string& root,
                                                         MetadataStore& store,
                                                         FileProviderOptions options) {
  std::unique_ptr<FileProvider> p(new FileProvider(root, store, std::move(options)));
  p->root_fd_ = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (p->root_fd_ < 0) return UnavailableError(Errno(root, errno));
  if (!p->options_.dry_run) {
    std::string tmp = std::string(kMetaDirName) + "/tmp";
    mkdirat(p->root_fd_, std::string(kMetaDirName).c_str(), 0700);
    mkdirat(p->root_fd_, tmp.c_str(), 0700);
    auto fd = p->OpenBeneath(tmp, O_RDONLY | O_DIRECTORY);
    if (!fd.ok()) return fd.status().WithContext(root + "/" + tmp);
    p->tmp_fd_ = *fd;
    p->SweepTemp(true);
  }
  return p;
}

void FileProvider::SweepTemp(bool everything) {
  // Temporary files left by an interrupted run were never renamed into
  // place, so nothing refers to them. Partial fetches are kept a day for a
  // transfer to resume, unless another process holds them.
  DIR* dir = fdopendir(dup(tmp_fd_));
  if (dir == nullptr) return;
  const int64_t now = std::time(nullptr);
  while (struct dirent* e = readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    bool partial = std::string_view(e->d_name).starts_with(kPartialPrefix);
    if (!partial && !everything) continue;
    if (partial) {
      struct stat st;
      if (fstatat(tmp_fd_, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
          now - st.st_mtime < kPartialKeepSeconds) {
        continue;
      }
      Fd held(openat(tmp_fd_, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
      if (held.get() >= 0 && flock(held.get(), LOCK_EX | LOCK_NB) != 0) continue;
    }
    unlinkat(tmp_fd_, e->d_name, 0);
  }
  closedir(dir);
}

namespace {

// Whether OpenBeneath may use openat2(2). Kernels before Linux 5.6 lack it,
// and seccomp filters that do not know it answer ENOSYS (as container
// runtimes' default filters do; a filter that answers EPERM is taken at its
// word): after an ENOSYS, and when the environment says MESHSYNC_OPENAT2=0
// (the tests run both ways), paths are opened a component at a time.
std::atomic<bool> openat2_works{true};
bool UseOpenat2() {
  static const bool allowed = [] {
    const char* setting = std::getenv("MESHSYNC_OPENAT2");
    return setting == nullptr || std::string_view(setting) != "0";
  }();
  return allowed && openat2_works.load(std::memory_order_relaxed);
}

// openat(2) that retries when interrupted.
int OpenAt(int dir, const char* name, int flags) {
  while (true) {
    int fd = openat(dir, name, flags);
    if (fd >= 0 || errno != EINTR) return fd;
  }
}

// What openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS does, without it:
// every component is opened with O_NOFOLLOW from the one before, starting at
// `root`, and "." and ".." are refused, so no symbolic link is followed and
// nothing outside `root` is reached. Folders on the way are opened with
// O_PATH, which needs only the permission to search them, as openat2 does.
// Returns the descriptor, or -errno.
int OpenByComponents(int root, std::string_view rel, int flags) {
  std::vector<std::string> parts;
  while (!rel.empty()) {
    size_t slash = rel.find('/');
    std::string_view part = rel.substr(0, slash);
    if (part == "." || part == "..") return -EXDEV;  // as RESOLVE_BENEATH says
    if (!part.empty()) parts.emplace_back(part);
    if (slash == std::string_view::npos) break;
    rel.remove_prefix(slash + 1);
  }
  Fd dir;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int next = OpenAt(i == 0 ? root : dir.get(), parts[i].c_str(),
                      O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return -errno;  // read before `dir` is closed
    dir = Fd(next);
  }
  const char* last = parts.empty() ? "." : parts.back().c_str();
  int fd = OpenAt(parts.size() <= 1 ? root : dir.get(), last, flags);
  return fd >= 0 ? fd : -errno;
}

}  // namespace

Result<int> FileProvider::OpenBeneath(const std::string& rel, int flags) const {
  const int all_flags = flags | O_CLOEXEC | O_NOFOLLOW;
  auto failed = [&rel](int err) { return UnavailableError(Errno(rel.empty() ? "." : rel, err)); };
  if (UseOpenat2()) {
    struct open_how how {};
    how.flags = static_cast<uint64_t>(all_flags);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    while (true) {
      long fd = syscall(SYS_openat2, root_fd_, rel.empty() ? "." : rel.c_str(), &how, sizeof how);
      if (fd >= 0) return static_cast<int>(fd);
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno != ENOSYS) return failed(errno);
      openat2_works.store(false, std::memory_order_relaxed);
      break;
    }
  }
  int fd = OpenByComponents(root_fd_, rel, all_flags);
  if (fd < 0) return failed(-fd);
  return fd;
}

FileProvider::Node FileProvider::NodeOf(const ItemId& parent, std::string name,
                                        const EntryState& s) {
  Node node;
  static_cast<FileStat&>(node) = s;
  node.parent = parent;
  node.name = std::move(name);
  node.digest = s.kind == Kind::kFile ? DigestWord(s.chunks) : 0;
  return node;
}

void FileProvider::AddNode(const ItemId& id, Node node) {
  RemoveNode(id);
  if (Node* parent = nodes_.Find(node.parent); parent != nullptr) ++parent->children;
  IndexKey(nodes_.Insert(id, std::move(node)).first);
}

void FileProvider::IndexKey(Node* node) {
  // 64-bit hashes of (parent, name) collide about never; a second key with
  // the same hash waits in the overflow map. Entries of a NodeTable stay
  // where they are, so the index holds pointers.
  uint64_t hash = KeyHash(node->parent, node->name);
  if (!by_key_.Insert(hash, node)) key_overflow_.emplace(hash, node);
}

void FileProvider::RemoveNode(const ItemId& id) {
  Node* node = nodes_.Find(id);
  if (node == nullptr) return;
  uint64_t hash = KeyHash(node->parent, node->name);
  if (by_key_.Find(hash) == node) {
    by_key_.Erase(hash);
    auto spare = key_overflow_.find(hash);
    if (spare != key_overflow_.end()) {
      by_key_.Insert(hash, spare->second);
      key_overflow_.erase(spare);
    }
  } else {
    auto range = key_overflow_.equal_range(hash);
    for (auto k = range.first; k != range.second; ++k) {
      if (k->second == node) {
        key_overflow_.erase(k);
        break;
      }
    }
  }
  if (Node* parent = nodes_.Find(node->parent); parent != nullptr) --parent->children;
  nodes_.Erase(id);
}

FileProvider::Node* FileProvider::FindChildNode(const ItemId& parent, std::string_view name) const {
  uint64_t hash = KeyHash(parent, name);
  Node* node = by_key_.Find(hash);
  if (node == nullptr) return nullptr;
  if (node->parent == parent && node->name == name) return node;
  auto range = key_overflow_.equal_range(hash);
  for (auto k = range.first; k != range.second; ++k) {
    if (k->second->parent == parent && k->second->name == name) return k->second;
  }
  return nullptr;
}

std::optional<ItemId> FileProvider::FindChild(const ItemId& parent, std::string_view name) const {
  Node* node = FindChildNode(parent, name);
  if (node == nullptr) return std::nullopt;
  return node->id;
}

FileProvider::Totals FileProvider::CountItems() const {
  Totals totals;
  for (const Node& node : nodes_) {
    switch (node.kind) {
      case Kind::kFile:
        ++totals.files;
        totals.bytes += node.size;
        break;
      case Kind::kDirectory:
        ++totals.directories;
        break;
      case Kind::kSymlink:
        ++totals.symlinks;
        break;
    }
  }
  return totals;
}

std::optional<std::string> FileProvider::PathOf(const ItemId& id) const {
  std::vector<const std::string*> parts;
  ItemId cursor = id;
  while (!(cursor == ItemId::Min())) {
    const Node* node = nodes_.Find(cursor);
    if (node == nullptr || parts.size() > kMaxDepth) return std::nullopt;
    parts.push_back(&node->name);
    cursor = node->parent;
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (!path.empty()) path += '/';
    path += **it;
  }
  return path;
}

Status FileProvider::LoadIndex() {
  nodes_.Clear();
  by_key_.Clear();
  key_overflow_.clear();
  // Sized first: growing two hash tables of 100,000 entries step by step
  // costs more than counting the items.
  MESHSYNC_ASSIGN_OR_RETURN(size_t count, store_.CountItems());
  nodes_.Reserve(count);
  by_key_.Reserve(count);
  Status corrupt;
  MESHSYNC_RETURN_IF_ERROR(
      store_.VisitItems(ItemId::Min(), ItemId::Max(), [&](const ItemMetadata& item) {
        if (item.tombstone) return true;
        ItemId parent;
        std::string name;
        auto state = DecodeState(item.provider_state);
        if (!state.ok() || !DecodePlacement(item.key, parent, name).ok()) {
          corrupt = DataLossError("metadata of item " + item.id.ToHex() + " is corrupt");
          return false;
        }
        auto [node, inserted] = nodes_.Insert(item.id, NodeOf(parent, std::move(name), *state));
        if (inserted) IndexKey(node);
        return true;
      }));
  MESHSYNC_RETURN_IF_ERROR(corrupt);
  for (const Node& node : nodes_) {
    if (Node* parent = nodes_.Find(node.parent); parent != nullptr) ++parent->children;
  }
  index_loaded_ = true;
  return Status::Ok();
}

Result<int> FileProvider::OpenDirOf(const ItemId& dir) {
  std::optional<std::string> rel = PathOf(dir);
  if (!rel.has_value()) return UnavailableError("folder " + dir.ToHex() + " is not here");
  return OpenBeneath(*rel, O_RDONLY | O_DIRECTORY);
}

void FileProvider::Record(std::string verb, std::string path, std::string detail) {
  actions_.push_back(FileAction{std::move(verb), std::move(path), std::move(detail)});
}

// ---------------------------------------------------------------------------
// Change detection.

class FileProvider::Walker {
 public:
  // Node::mark. A full pass starts with every node unseen: what it does
  // not claim was deleted. A scoped pass assumes every node outside its
  // places is as it was.
  static constexpr uint8_t kUnseen = 0;
  static constexpr uint8_t kClaimed = 1;  // found (or protected) by this pass
  static constexpr uint8_t kAssumed = 2;  // outside a scoped pass's places

  Walker(FileProvider& p, ChangeRecorder& recorder) : p_(p), recorder_(recorder) {}

  // A scoped pass's directories to look at.
  struct Place {
    std::string rel;
    uint32_t depth = 1;  // of its entries
    bool recursive = false;
  };
  using Places = std::map<ItemId, Place>;

  // A full pass, on an index fresh from the store.
  Status Run() {
    Fd root(dup(p_.root_fd_));
    if (root.get() < 0) return UnavailableError(Errno(p_.root_, errno));
    MESHSYNC_RETURN_IF_ERROR(WalkDir(root.get(), ItemId::Min(), "", 1));
    return Finish();
  }

  // A pass over the places of `scope` only, on the index the last pass
  // left. Sets *need_full, having recorded nothing, where only a full pass
  // can be sure (see FileProvider::DetectChangesIn).
  Status RunScoped(const ChangeScope& scope, bool* need_full) {
    scoped_ = true;
    Places places;
    std::vector<std::string> unknown;  // places the index has no directory at
    for (const ChangeScope::Place& place : scope.places) {
      std::string rel = place.path;
      while (!rel.empty() && rel.back() == '/') rel.pop_back();
      std::vector<std::string_view> parts = SplitPath(rel);
      if (std::any_of(parts.begin(), parts.end(),
                      [](std::string_view part) { return part == "." || part == ".."; })) {
        *need_full = true;
        return Status::Ok();
      }
      if (!parts.empty() && parts[0] == kMetaDirName) continue;
      if (UnderIgnored(parts)) continue;
      std::optional<ItemId> id = DirAt(parts, parts.size());
      if (!id.has_value()) {
        unknown.push_back(std::move(rel));
        continue;
      }
      Place& entry = places[*id];
      entry.rel = std::move(rel);
      entry.depth = static_cast<uint32_t>(parts.size()) + 1;
      entry.recursive |= place.recursive;
    }
    // A place the index does not know is new (its nearest known ancestor's
    // walk finds it and goes down it), or stale (something moved).
    for (const std::string& rel : unknown) {
      std::vector<std::string_view> parts = SplitPath(rel);
      size_t known = parts.size();
      std::optional<ItemId> ancestor;
      while (!ancestor.has_value()) ancestor = DirAt(parts, --known);
      if (places.count(*ancestor) == 0) {
        *need_full = true;
        return Status::Ok();
      }
    }
    // A place's entries are to be looked at (all below it, if recursive);
    // everything else is assumed as it was.
    for (Node& node : p_.nodes_) {
      node.mark = places.count(node.parent) > 0 ? kUnseen : kAssumed;
    }
    for (const auto& [id, place] : places) {
      if (place.recursive) Unassume(id);
    }
    // Recursive places first, so that no directory is walked twice.
    std::vector<std::pair<ItemId, const Place*>> order;
    for (const auto& [id, place] : places) order.emplace_back(id, &place);
    std::stable_partition(order.begin(), order.end(),
                          [](const auto& entry) { return entry.second->recursive; });
    for (const auto& [id, place] : order) {
      if (Covered(id, places) || walked_.count(id) > 0) continue;
      auto fd = p_.OpenBeneath(place->rel, O_RDONLY | O_DIRECTORY);
      if (!fd.ok()) {
        // Gone: if its parent is looked at, the parent's walk tells.
        const Node* node = Find(id);
        if (node != nullptr && places.count(node->parent) > 0) {
          Reassume(id);
          continue;
        }
        *need_full = true;
        return Status::Ok();
      }
      Fd dir(*fd);
      recursive_ = place->recursive;
      MESHSYNC_RETURN_IF_ERROR(WalkDir(dir.get(), id, place->rel, place->depth));
      if (need_full_) {
        *need_full = true;
        return Status::Ok();
      }
    }
    // A directory that is gone takes what it held with it.
    std::vector<ItemId> gone;
    for (const Node& node : p_.nodes_) {
      if (node.mark == kUnseen && node.kind == Kind::kDirectory) gone.push_back(node.id);
    }
    if (!gone.empty()) Remark(std::move(gone), kAssumed, kUnseen, false);
    return Finish();
  }

 private:
  Status Finish() {
    MESHSYNC_RETURN_IF_ERROR(ResolveDeferred());
    MESHSYNC_RETURN_IF_ERROR(HashAndMatch());
    return RecordAll();
  }

  static std::vector<std::string_view> SplitPath(std::string_view rel) {
    std::vector<std::string_view> parts;
    while (!rel.empty()) {
      size_t slash = rel.find('/');
      std::string_view part = rel.substr(0, slash);
      if (!part.empty()) parts.push_back(part);
      if (slash == std::string_view::npos) break;
      rel.remove_prefix(slash + 1);
    }
    return parts;
  }

  // The directory the index has at the first `count` parts, if any.
  std::optional<ItemId> DirAt(const std::vector<std::string_view>& parts, size_t count) const {
    ItemId id = ItemId::Min();
    for (size_t i = 0; i < count; ++i) {
      const Node* node = p_.FindChildNode(id, parts[i]);
      if (node == nullptr || node->kind != Kind::kDirectory) return std::nullopt;
      id = node->id;
    }
    return id;
  }

  bool UnderIgnored(const std::vector<std::string_view>& parts) const {
    std::string prefix;
    for (std::string_view part : parts) {
      if (!prefix.empty()) prefix += '/';
      prefix += part;
      if (p_.options_.ignore.Ignored(prefix, true)) return true;
    }
    return false;
  }

  const Node* Find(const ItemId& id) const { return p_.nodes_.Find(id); }

  // Whether a recursive place other than `id` holds it.
  bool Covered(const ItemId& id, const Places& places) const {
    const Node* node = Find(id);
    for (size_t hops = 0; node != nullptr && hops <= kMaxDepth; ++hops) {
      auto place = places.find(node->parent);
      if (place != places.end() && place->second.recursive) return true;
      node = Find(node->parent);
    }
    return false;
  }

  void BuildChildren() {
    if (!children_.empty()) return;
    for (const Node& node : p_.nodes_) children_.emplace(node.parent, node.id);
  }

  // Marks `to` what is marked `from` below `roots`: below everything, or
  // (`everywhere` false) only below what it marks.
  void Remark(std::vector<ItemId> roots, uint8_t from, uint8_t to, bool everywhere) {
    BuildChildren();
    std::vector<ItemId> stack = std::move(roots);
    while (!stack.empty()) {
      ItemId id = stack.back();
      stack.pop_back();
      auto range = children_.equal_range(id);
      for (auto it = range.first; it != range.second; ++it) {
        Node& child = p_.nodes_.At(it->second);
        const bool marked = child.mark == from;
        if (marked) child.mark = to;
        if (marked || everywhere) stack.push_back(it->second);
      }
    }
  }

  // Everything below `dir` that was assumed is to be looked at.
  void Unassume(const ItemId& dir) { Remark({dir}, kAssumed, kUnseen, true); }

  // Assumes again what a place left unseen, but not below what this pass
  // has claimed since (a directory moved elsewhere: what it held is looked
  // at there).
  void Reassume(const ItemId& dir) { Remark({dir}, kUnseen, kAssumed, false); }

  struct Found {
    ItemId parent;
    std::string name;
    std::string rel;
    struct stat st {};
    Kind kind = Kind::kFile;
    uint32_t depth = 0;
  };
  // One item to record: what changed, and its new state.
  struct Change {
    ItemId id;
    bool create = false;
    bool content = false;
    bool placement = false;
    bool attributes = false;
    bool verify_only = false;  // ctime moved: rehash, record only if the bytes differ
    Found found;
    EntryState state;
  };

  Status WalkDir(int dir_fd, const ItemId& dir_id, const std::string& rel, uint32_t depth) {
    if (scoped_ && !walked_.insert(dir_id).second) {
      // Reached again (a place inside a folder moved here): a scoped pass
      // would see its entries twice.
      need_full_ = true;
      return Status::Ok();
    }
    if (depth > kMaxDepth) {
      p_.problems_.push_back(rel + ": folders nested too deep; not synced");
      ProtectSubtree(dir_id);
      return Status::Ok();
    }
    DIR* dir = fdopendir(dup(dir_fd));
    if (dir == nullptr) {
      p_.problems_.push_back((rel.empty() ? "." : rel) + ": " + std::strerror(errno));
      ProtectSubtree(dir_id);
      return Status::Ok();
    }
    // The descriptor may share its offset with an earlier walk's.
    rewinddir(dir);
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = readdir(dir)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (depth == 1 && name == kMetaDirName) continue;
      names.emplace_back(name);
    }
    int read_error = errno;
    closedir(dir);
    if (read_error != 0) {
      p_.problems_.push_back((rel.empty() ? "." : rel) + ": " + std::strerror(read_error));
      ProtectSubtree(dir_id);
      return Status::Ok();
    }
    std::sort(names.begin(), names.end());
    // What the index knows under these names, looked up in one tight loop:
    // the lookups miss the cache, and here their misses overlap instead of
    // waiting one by one between stat calls.
    std::vector<Node*> known(names.size());
    for (size_t i = 0; i < names.size(); ++i) known[i] = p_.FindChildNode(dir_id, names[i]);
    for (size_t i = 0; i < names.size(); ++i) {
      std::string& name = names[i];
      Found f;
      f.parent = dir_id;
      f.rel = Join(rel, name);
      f.depth = depth;
      if (fstatat(dir_fd, name.c_str(), &f.st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) p_.problems_.push_back(f.rel + ": " + std::strerror(errno));
        Protect(dir_id, name);
        continue;
      }
      std::optional<Kind> kind = KindOf(f.st.st_mode);
      bool is_dir = kind == Kind::kDirectory;
      if (p_.options_.ignore.Ignored(f.rel, is_dir)) {
        Protect(dir_id, name);
        continue;
      }
      if (!kind.has_value()) {
        p_.problems_.push_back(f.rel + ": not a file, folder or symlink; not synced");
        continue;
      }
      f.kind = *kind;
      f.name = std::move(name);
      if (is_dir) {
        bool descend = false;
        MESHSYNC_ASSIGN_OR_RETURN(ItemId id, ResolveDir(f, &descend));
        // A scoped pass goes down a directory only if all below is in
        // scope: a recursive place, or a directory new or moved here.
        if (scoped_ && !recursive_ && !descend) continue;
        Fd child(openat(dir_fd, f.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (child.get() < 0) {
          p_.problems_.push_back(f.rel + ": " + std::strerror(errno));
          ProtectSubtree(id);
          continue;
        }
        const bool was_recursive = recursive_;
        recursive_ = true;
        Status walked = WalkDir(child.get(), id, f.rel, depth + 1);
        recursive_ = was_recursive;
        MESHSYNC_RETURN_IF_ERROR(walked);
        if (need_full_) return Status::Ok();
      } else {
        ResolveEntry(std::move(f), known[i]);
      }
    }
    return Status::Ok();
  }

  // Directories are resolved during the walk, since their children are
  // looked up by the directory's id: by name, else by inode (moved), else a
  // deleted directory at this path comes back, else a new item.
  // `*descend`: the directory is new here, or moved here (a scoped pass
  // must look at everything below it).
  Result<ItemId> ResolveDir(const Found& f, bool* descend) {
    Change change;
    change.found = f;
    change.state.kind = Kind::kDirectory;
    FillStat(f.st, change.state);
    std::optional<ItemId> id = p_.FindChild(f.parent, f.name);
    if (id.has_value() && (Claimed(*id) || p_.nodes_.At(*id).kind != Kind::kDirectory)) {
      id.reset();
    }
    if (!id.has_value()) {
      id = ByInode(f.st, Kind::kDirectory);
      if (id.has_value()) {
        change.placement = true;
        *descend = true;
        // Moved: a scoped pass looks at all it holds, wherever that was.
        if (scoped_) Unassume(*id);
      }
    }
    if (!id.has_value()) {
      std::string key = EncodePlacement(f.parent, f.name);
      MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> old, recorder_.FindByKey(key));
      if (old.has_value() && old->tombstone && !Claimed(old->id)) {
        auto state = DecodeState(old->provider_state);
        if (state.ok() && state->kind == Kind::kDirectory) id = old->id;
      }
      change.create = true;
    }
    if (!id.has_value()) id = NewId(f);
    *descend |= change.create;
    change.id = *id;
    Claim(*id);
    if (!change.create) {
      const Node& node = p_.nodes_.At(*id);
      change.attributes = node.mode != change.state.mode;
      // A directory's ctime moves whenever an entry is added or removed, so
      // it is not compared; a new inode (replaced) refreshes the cache.
      if (change.placement || change.attributes || node.ino != change.state.ino) {
        changes_.push_back(std::move(change));
      }
    } else {
      changes_.push_back(std::move(change));
    }
    return *id;
  }

  // Files and links are claimed at once when the name and inode match (the
  // common case); anything else waits until the whole tree has been seen.
  // `node` is the index's entry at the same name, if any.
  void ResolveEntry(Found f, Node* node) {
    if (node != nullptr && node->mark == kUnseen && node->kind == f.kind &&
        node->ino == f.st.st_ino && node->dev == f.st.st_dev) {
      node->mark = kClaimed;
      Compare(node->id, *node, std::move(f), false);
      return;
    }
    deferred_.push_back(std::move(f));
  }

  // A claimed item: what changed since its stat cache?
  void Compare(const ItemId& id, const Node& node, Found f, bool moved) {
    Change change;
    change.id = id;
    change.placement = moved;
    change.state.kind = f.kind;
    FillStat(f.st, change.state);
    change.attributes = node.mode != change.state.mode;
    bool same_stat = node.size == change.state.size && node.mtime_ns == change.state.mtime_ns;
    bool same_inode = node.ino == change.state.ino && node.dev == change.state.dev;
    bool same_bytes = same_stat && same_inode;
    bool same_ctime = node.ctime_ns == change.state.ctime_ns;
    if (f.kind == Kind::kSymlink) {
      change.content = !same_bytes || !same_ctime;  // re-read the target, compare below
      change.verify_only = same_bytes;
    } else if (!same_stat) {
      change.content = true;
    } else if (!same_inode) {
      // Replaced by a file of the same size and mtime: a copy put back (a
      // restore, `cp -p`, a save that kept the mtime). Hash it, and record
      // a change only if the bytes differ, or a no-op would win conflicts.
      change.content = true;
      change.verify_only = true;
    } else if (!same_ctime && !change.attributes && !moved) {
      // Only ctime moved: something rewrote the file and kept its size and
      // mtime. Hash it again and record a change only if the bytes differ.
      change.content = true;
      change.verify_only = true;
    }
    if (!change.content && !change.placement && !change.attributes && same_ctime) return;
    change.found = std::move(f);
    changes_.push_back(std::move(change));
  }

  Status ResolveDeferred() {
    for (Found& f : deferred_) {
      std::optional<ItemId> id = ByInode(f.st, f.kind);
      if (id.has_value()) {
        Claim(*id);
        const Node& node = p_.nodes_.At(*id);
        bool moved = !(node.parent == f.parent) || node.name != f.name;
        Compare(*id, node, std::move(f), moved);
        continue;
      }
      id = p_.FindChild(f.parent, f.name);
      if (id.has_value() && !Claimed(*id) && p_.nodes_.At(*id).kind == f.kind) {
        // Replaced under the same name (saved by writing a new file and
        // renaming it over the old one): the same item, new content.
        Claim(*id);
        Compare(*id, p_.nodes_.At(*id), std::move(f), false);
        continue;
      }
      Change change;
      change.create = true;
      change.content = change.placement = change.attributes = true;
      change.state.kind = f.kind;
      FillStat(f.st, change.state);
      change.found = std::move(f);
      changes_.push_back(std::move(change));
    }
    deferred_.clear();
    return Status::Ok();
  }

  // Reads what changed: file chunks (on every core) and link targets.
  Status HashAndMatch() {
    std::vector<size_t> to_hash;
    for (size_t i = 0; i < changes_.size(); ++i) {
      Change& c = changes_[i];
      if (!c.content || c.state.kind == Kind::kDirectory) continue;
      if (c.state.kind == Kind::kSymlink) {
        auto dir = p_.OpenBeneath(DirName(c.found.rel), O_RDONLY | O_DIRECTORY);
        Status read = dir.ok() ? ReadSymlink(*dir, c.found.name, c.state.target) : dir.status();
        if (dir.ok()) ::close(*dir);
        if (!read.ok()) Unreadable(c, read);
        continue;
      }
      to_hash.push_back(i);
    }
    // A bounded number of files open at once.
    constexpr size_t kOpenFiles = 256;
    for (size_t begin = 0; begin < to_hash.size(); begin += kOpenFiles) {
      std::vector<HashJob> jobs;
      std::vector<Fd> fds;
      std::vector<size_t> job_change;
      for (size_t k = begin; k < std::min(to_hash.size(), begin + kOpenFiles); ++k) {
        Change& c = changes_[to_hash[k]];
        auto fd = p_.OpenBeneath(c.found.rel, O_RDONLY);
        if (!fd.ok()) {
          Unreadable(c, fd.status());
          continue;
        }
        fds.emplace_back(*fd);
        struct stat st;
        if (fstat(*fd, &st) != 0 || !SameFile(st, c.state)) {
          Unreadable(c, UnavailableError("changed while it was scanned; will sync next time"));
          continue;
        }
        jobs.push_back(HashJob{*fd, c.state.size, {}, {}});
        job_change.push_back(to_hash[k]);
      }
      HashFiles(jobs, p_.options_.hash_threads);
      for (size_t j = 0; j < jobs.size(); ++j) {
        Change& c = changes_[job_change[j]];
        struct stat st;
        if (!jobs[j].status.ok() || fstat(jobs[j].fd, &st) != 0 || !SameFile(st, c.state)) {
          Unreadable(c, jobs[j].status.ok()
                            ? UnavailableError("changed while it was read; will sync next time")
                            : jobs[j].status);
          continue;
        }
        c.state.chunks = std::move(jobs[j].chunks);
      }
    }
    // Symlink targets and ctime-only changes: compare with what is stored.
    for (Change& c : changes_) {
      if (c.create || !c.verify_only || c.id == ItemId::Min()) continue;
      MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, recorder_.FindItem(c.id));
      if (!item.has_value()) continue;
      auto old = DecodeState(item->provider_state);
      if (!old.ok()) continue;
      bool same = c.state.kind == Kind::kSymlink ? old->target == c.state.target
                                                 : old->chunks == c.state.chunks;
      c.content = !same;
    }
    // New files whose bytes match a file that vanished: moved (across
    // devices, or by a copy and delete).
    std::unordered_multimap<uint64_t, ItemId> vanished;
    bool any_new = std::any_of(changes_.begin(), changes_.end(), [](const Change& c) {
      return c.create && c.found.kind == Kind::kFile;
    });
    if (any_new) {
      for (const Node& node : p_.nodes_) {
        if (node.kind == Kind::kFile && node.size > 0 && node.mark == kUnseen) {
          vanished.emplace(node.digest, node.id);
        }
      }
    }
    for (Change& c : changes_) {
      if (c.create && c.found.kind == Kind::kFile && !vanished.empty() && !c.state.chunks.empty() &&
          c.id == ItemId::Min()) {
        auto range = vanished.equal_range(DigestWord(c.state.chunks));
        for (auto it = range.first; it != range.second; ++it) {
          if (Claimed(it->second)) continue;
          const Node& node = p_.nodes_.At(it->second);
          if (node.size != c.state.size) continue;
          c.id = it->second;
          c.create = false;
          c.content = node.mtime_ns != c.state.mtime_ns;
          c.placement = true;
          c.attributes = node.mode != c.state.mode;
          Claim(c.id);
          break;
        }
      }
      if (c.create && c.id == ItemId::Min()) c.id = NewId(c.found);
    }
    return Status::Ok();
  }

  Status RecordAll() {
    // What was not seen was deleted.
    std::vector<ItemId> gone;
    // (An indexed item is claimed by its mark: no lookup of its id.)
    for (const Node& node : p_.nodes_) {
      if (node.mark == kUnseen) gone.push_back(node.id);
    }
    std::sort(gone.begin(), gone.end());
    for (Change& c : changes_) {
      if (c.id == ItemId::Min()) continue;  // unreadable: left for next time
      LocalChange local;
      local.id = c.id;
      if (c.create) {
        local.changed_units = {kContentUnit, kPlacementUnit, kAttributesUnit};
      } else {
        if (c.content) local.changed_units.push_back(kContentUnit);
        if (c.placement) local.changed_units.push_back(kPlacementUnit);
        if (c.attributes) local.changed_units.push_back(kAttributesUnit);
      }
      if (!c.create && !c.content && c.state.kind != Kind::kDirectory) {
        // The stored chunks still describe the bytes.
        MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, recorder_.FindItem(c.id));
        if (item.has_value()) {
          auto old = DecodeState(item->provider_state);
          if (old.ok()) {
            c.state.chunks = std::move(old->chunks);
            if (c.state.kind == Kind::kSymlink) c.state.target = std::move(old->target);
          }
        }
      }
      local.key = EncodePlacement(c.found.parent, c.found.name);
      MarkRacy(c.state);
      local.provider_state = EncodeState(c.state);
      MESHSYNC_RETURN_IF_ERROR(recorder_.Record(std::move(local)).status());
      p_.AddNode(c.id, NodeOf(c.found.parent, c.found.name, c.state));
      if (c.content) p_.IndexChunks(c.id, c.state);
    }
    for (const ItemId& id : gone) {
      // Ignored now: its deletion is not synced either.
      std::optional<std::string> rel = p_.PathOf(id);
      if (rel.has_value() &&
          p_.options_.ignore.Ignored(*rel, p_.nodes_.At(id).kind == Kind::kDirectory)) {
        continue;
      }
      MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, recorder_.FindItem(id));
      if (!item.has_value() || item->tombstone) continue;
      LocalChange local;
      local.id = id;
      local.deleted = true;
      local.key = item->key;
      local.provider_state = item->provider_state;
      MESHSYNC_RETURN_IF_ERROR(recorder_.Record(std::move(local)).status());
    }
    for (const ItemId& id : gone) p_.RemoveNode(id);
    return Status::Ok();
  }

  void Unreadable(Change& c, const Status& status) {
    p_.problems_.push_back(c.found.rel + ": " + std::string(status.message()));
    if (!c.create) {
      Claim(c.id);  // keep what we knew
    }
    c.id = ItemId::Min();
    c.create = false;
  }

  ItemId NewId(const Found& f) {
    ItemId id = PathDerivedId(f.parent, f.name, f.depth);
    if (p_.nodes_.Contains(id) || Claimed(id) || taken_.count(id) > 0) {
      // The path's id is in use by an item that moved away: a random one.
      ItemId random = ItemId::Generate(SystemClock(), SystemRandom());
      id = ItemId((static_cast<uint64_t>(std::min<uint32_t>(f.depth, 0xFFFF)) << 48) |
                      (random.hi & 0x0000FFFFFFFFFFFFull),
                  random.lo);
    }
    taken_.insert(id);
    return id;
  }

  std::optional<ItemId> ByInode(const struct stat& st, Kind kind) {
    if (!inodes_built_) {
      for (const Node& node : p_.nodes_) inodes_.emplace(InodeKey(node.dev, node.ino), node.id);
      inodes_built_ = true;
    }
    auto range = inodes_.equal_range(InodeKey(st.st_dev, st.st_ino));
    for (auto it = range.first; it != range.second; ++it) {
      const Node& node = p_.nodes_.At(it->second);
      if (node.kind == kind && node.ino == st.st_ino && node.dev == st.st_dev &&
          !Claimed(it->second)) {
        return it->second;
      }
    }
    return std::nullopt;
  }
  static uint64_t InodeKey(uint64_t dev, uint64_t ino) { return ino * 0x9E3779B97F4A7C15ull ^ dev; }

  // An entry we cannot or must not look at (ignored, unreadable): whatever
  // we knew there stays as it was, and is not reported deleted.
  void Protect(const ItemId& parent, const std::string& name) {
    std::optional<ItemId> id = p_.FindChild(parent, name);
    if (id.has_value()) ProtectSubtree(*id);
  }
  void ProtectSubtree(const ItemId& root) {
    if (!(root == ItemId::Min())) Claim(root);
    BuildChildren();
    std::vector<ItemId> stack{root};
    while (!stack.empty()) {
      ItemId id = stack.back();
      stack.pop_back();
      auto range = children_.equal_range(id);
      for (auto it = range.first; it != range.second; ++it) {
        if (!Claimed(it->second)) {
          Claim(it->second);
          stack.push_back(it->second);
        }
      }
    }
  }

  FileProvider& p_;
  ChangeRecorder& recorder_;
  // Claimed items: a flag in the index's node, or this set for the ids the
  // index does not hold (deleted folders coming back).
  bool Claimed(const ItemId& id) const {
    const Node* node = p_.nodes_.Find(id);
    return node != nullptr ? node->mark != kUnseen : claimed_extra_.count(id) > 0;
  }
  void Claim(const ItemId& id) {
    if (Node* node = p_.nodes_.Find(id); node != nullptr) {
      node->mark = kClaimed;
    } else {
      claimed_extra_.insert(id);
    }
  }
  std::unordered_set<ItemId, Id128Hash> claimed_extra_;
  std::unordered_set<ItemId, Id128Hash> taken_;
  std::vector<Found> deferred_;
  std::vector<Change> changes_;
  bool inodes_built_ = false;
  std::unordered_multimap<uint64_t, ItemId> inodes_;
  std::unordered_multimap<ItemId, ItemId, Id128Hash> children_;
  bool scoped_ = false;                           // RunScoped
  std::unordered_set<ItemId, Id128Hash> walked_;  // by a scoped pass
  bool recursive_ = true;                         // going down every directory
  bool need_full_ = false;  // a scoped pass met what only a full pass can tell
};

Status FileProvider::DetectChanges(ChangeRecorder& recorder) {
  problems_.clear();
  pending_rmdirs_.clear();
  chunk_index_.clear();
  trusted_sources_.clear();
  chunk_index_loaded_ = false;
  if (tmp_fd_ >= 0) SweepTemp(false);
  MESHSYNC_RETURN_IF_ERROR(LoadIndex());
  ++counters_.full_scans;
  Walker walker(*this, recorder);
  return walker.Run();
}

Status FileProvider::DetectChangesIn(ChangeRecorder& recorder, const ChangeScope& scope) {
  if (!index_loaded_) return DetectChanges(recorder);
  problems_.clear();
  pending_rmdirs_.clear();
  // The chunk index stays: a scoped pass adds what it hashes, and a stale
  // entry costs a read (the hash decides, see ReadLocalChunk).
  bool need_full = false;
  Walker walker(*this, recorder);
  MESHSYNC_RETURN_IF_ERROR(walker.RunScoped(scope, &need_full));
  if (need_full) return DetectChanges(recorder);
  ++counters_.scoped_scans;
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Reading for peers.

Status FileProvider::LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                                    std::vector<UnitData>& out) {
  MESHSYNC_ASSIGN_OR_RETURN(EntryState state, DecodeState(item.provider_state));
  for (ChangeUnitId unit : units) {
    switch (unit) {
      case kContentUnit:
        out.push_back(UnitData{unit, EncodeContent(state)});
        break;
      case kPlacementUnit:
        out.push_back(UnitData{unit, item.key});
        break;
      case kAttributesUnit:
        out.push_back(UnitData{unit, EncodeMode(state.mode)});
        break;
      default:
        break;  // not a unit of ours: removed
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<DataReader>> FileProvider::OpenData(const ItemMetadata& item,
                                                           ChangeUnitId unit) {
  if (unit != kContentUnit) return InvalidArgumentError("only file content has bulk data");
  if (!index_loaded_) MESHSYNC_RETURN_IF_ERROR(LoadIndex());
  MESHSYNC_ASSIGN_OR_RETURN(EntryState state, DecodeState(item.provider_state));
  if (state.kind != Kind::kFile) return InvalidArgumentError("not a file");
  std::optional<std::string> rel = PathOf(item.id);
  if (!rel.has_value()) return UnavailableError("the file is no longer here");
  MESHSYNC_ASSIGN_OR_RETURN(int raw, OpenBeneath(*rel, O_RDONLY));
  Fd fd(raw);
  struct stat st;
  if (fstat(fd.get(), &st) != 0 || !SameFile(st, state)) {
    return UnavailableError(*rel + " changed since it was scanned; will sync next time");
  }
  return std::unique_ptr<DataReader>(new LocalFileReader(std::move(fd), std::move(state)));
}

// ---------------------------------------------------------------------------
// Applying changes.

std::string FileProvider::TrashStamp() {
  if (trash_stamp_.empty()) {
    time_t now = static_cast<time_t>(SystemClock().NowMillis() / 1000);
    struct tm tm {};
    gmtime_r(&now, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    trash_stamp_ = stamp;
  }
  return trash_stamp_;
}

Status FileProvider::MoveToTrash(int dir_fd, const std::string& name, const std::string& rel) {
  std::string dir = std::string(kMetaDirName) + "/trash/" + TrashStamp();
  std::string sub = DirName(rel);
  std::string path = dir;
  // Create .meshsync/trash/STAMP/DIRS one level at a time, never following links.
  std::vector<std::string> parts{"trash", TrashStamp()};
  for (size_t start = 0; !sub.empty() && start <= sub.size();) {
    size_t slash = sub.find('/', start);
    if (slash == std::string::npos) slash = sub.size();
    parts.push_back(sub.substr(start, slash - start));
    start = slash + 1;
  }
  std::string built(kMetaDirName);
  for (const std::string& part : parts) {
    built += "/" + part;
    if (mkdirat(root_fd_, built.c_str(), 0700) != 0 && errno != EEXIST) {
      return UnavailableError(Errno("cannot create " + built, errno));
    }
  }
  MESHSYNC_ASSIGN_OR_RETURN(int raw, OpenBeneath(built, O_RDONLY | O_DIRECTORY));
  Fd trash(raw);
  std::string base = BaseName(rel);
  std::string target = base;
  for (int n = 1;; ++n) {
    if (renameat2(dir_fd, name.c_str(), trash.get(), target.c_str(), RENAME_NOREPLACE) == 0) break;
    if (errno != EEXIST || n > 1000)
      return UnavailableError(Errno("cannot move " + rel + " to the trash", errno));
    target = base + "." + std::to_string(n);
  }
  ++counters_.trashed;
  wrote_ = true;
  return Status::Ok();
}

Status FileProvider::CheckUnchanged(int dir_fd, const std::string& name, const EntryState& expected,
                                    const std::string& rel) const {
  struct stat st;
  if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return UnavailableError(Errno(rel, errno) + "; will sync next time");
  }
  std::optional<Kind> kind = KindOf(st.st_mode);
  if (kind != expected.kind || !SameFile(st, expected)) {
    return UnavailableError(rel + " changed since it was scanned; will sync next time");
  }
  return Status::Ok();
}

// A file of this folder that chunks are read or copied from.
struct FileProvider::LocalSource {
  ItemId item;
  Fd fd;
  bool trusted = false;     // its stat matched a TrustedSource's when opened
  uint32_t generation = 0;  // that TrustedSource's
  struct stat st = {};      // when opened
};

void FileProvider::IndexChunks(const ItemId& id, const EntryState& state) {
  if (!chunk_index_loaded_ || state.kind != Kind::kFile) return;
  const uint32_t generation = ++index_generation_;
  if (state.size >= kTrustedSourceBytes && state.ctime_ns != 0) {
    trusted_sources_[id] = TrustedSource{generation, state};
  } else {
    trusted_sources_.erase(id);
  }
  uint64_t offset = 0;
  for (const Chunk& chunk : state.chunks) {
    // The latest indexing wins: a file saved again has its chunks where
    // its new state says, of the generation that may be trusted.
    chunk_index_.insert_or_assign(
        ChunkKey(chunk.hash),
        ChunkPlace{id, offset, ChunkCheck(chunk.hash), chunk.length, generation});
    offset += chunk.length;
  }
}

Status FileProvider::LoadChunkIndex() {
  chunk_index_.clear();
  trusted_sources_.clear();
  chunk_index_loaded_ = true;  // for IndexChunks
  Status visited = store_.VisitItems(ItemId::Min(), ItemId::Max(), [&](const ItemMetadata& item) {
    if (item.tombstone) return true;
    auto state = DecodeState(item.provider_state);
    if (state.ok()) IndexChunks(item.id, *state);
    return true;
  });
  if (!visited.ok()) {
    chunk_index_.clear();
    trusted_sources_.clear();
    chunk_index_loaded_ = false;
  }
  return visited;
}

const FileProvider::ChunkPlace* FileProvider::FindLocalChunk(const Chunk& chunk) const {
  auto it = chunk_index_.find(ChunkKey(chunk.hash));
  if (it == chunk_index_.end() || it->second.length != chunk.length ||
      it->second.check != ChunkCheck(chunk.hash)) {
    return nullptr;
  }
  return &it->second;
}

const FileProvider::ChunkPlace* FileProvider::FindChunkLoading(const Chunk& chunk) {
  if (!index_loaded_ && !LoadIndex().ok()) return nullptr;
  if (!chunk_index_loaded_ && !LoadChunkIndex().ok()) return nullptr;
  return FindLocalChunk(chunk);
}

bool FileProvider::HasChunk(const Chunk& chunk) { return FindChunkLoading(chunk) != nullptr; }

bool FileProvider::ReadChunk(const Chunk& chunk, std::span<char> out) {
  const ChunkPlace* place = out.size() == chunk.length ? FindChunkLoading(chunk) : nullptr;
  LocalSource source;
  return place != nullptr && OpenSource(place->item, source) &&
         ReadFull(source.fd.get(), out, place->offset) &&
         HashBytes(out.data(), out.size()) == chunk.hash;
}

bool FileProvider::OpenSource(const ItemId& item, LocalSource& source) const {
  source = LocalSource{};
  std::optional<std::string> rel = PathOf(item);
  if (!rel.has_value()) return false;
  auto fd = OpenBeneath(*rel, O_RDONLY | O_NONBLOCK);
  if (!fd.ok()) return false;
  source.fd = Fd(*fd);
  source.item = item;
  if (fstat(source.fd.get(), &source.st) != 0) return true;  // not trusted: read and hashed
  auto it = trusted_sources_.find(item);
  if (it != trusted_sources_.end()) {
    const FileStat& then = it->second.stat;
    source.trusted =
        S_ISREG(source.st.st_mode) && source.st.st_ino == then.ino &&
        source.st.st_dev == then.dev && static_cast<uint64_t>(source.st.st_size) == then.size &&
        Nanos(source.st.st_mtim) == then.mtime_ns && Nanos(source.st.st_ctim) == then.ctime_ns;
    source.generation = it->second.generation;
  }
  return true;
}

bool FileProvider::SourceUnchanged(const LocalSource& source) {
  struct stat st;
  return fstat(source.fd.get(), &st) == 0 && st.st_ino == source.st.st_ino &&
         st.st_size == source.st.st_size && Nanos(st.st_mtim) == Nanos(source.st.st_mtim) &&
         Nanos(st.st_ctim) == Nanos(source.st.st_ctim);
}

Status FileProvider::FetchInto(const EntryState& content, DataReader& reader, int out,
                               uint64_t have, FileCounters& tally) const {
  std::vector<char> buffer;
  // The plan: the chunks an interrupted transfer left in `out` (its longest
  // checked prefix), then, chunk by chunk, whether this folder has it, or
  // else another (chunk_finder_).
  std::vector<bool> here(content.chunks.size(), false);
  std::vector<bool> elsewhere(content.chunks.size(), false);
  const bool look_elsewhere = chunk_finder_ != nullptr && content.size >= kLookElsewhereBytes;
  std::vector<ByteRange> ranges;
  size_t first = 0;
  uint64_t start = 0;
  uint64_t offset = 0;
  for (size_t i = 0; i < content.chunks.size(); ++i) {
    const Chunk& chunk = content.chunks[i];
    if (first == i && offset + chunk.length <= have) {
      buffer.resize(chunk.length);
      if (ReadFull(out, buffer, offset) && HashBytes(buffer.data(), buffer.size()) == chunk.hash) {
        tally.bytes_resumed += chunk.length;
        tally.bytes_reused += chunk.length;
        first = i + 1;
        start = offset + chunk.length;
        offset += chunk.length;
        continue;
      }
    }
    here[i] = FindLocalChunk(chunk) != nullptr;
    elsewhere[i] = !here[i] && look_elsewhere && chunk_finder_->Has(chunk);
    if (!here[i] && !elsewhere[i]) {
      if (!ranges.empty() && ranges.back().offset + ranges.back().length == offset) {
        ranges.back().length += chunk.length;
      } else {
        ranges.push_back(ByteRange{offset, chunk.length});
      }
    }
    offset += chunk.length;
  }
  reader.WillRead(ranges);
  // Then front to back, in large blocks.
  const uint64_t length = content.size - start;
  SequentialWriter writer(out, start, length,
                          length >= kDirectCopyMinBytes ? CopyMode::kAuto : CopyMode::kPageCache);
  LocalSource source;
  // Consecutive bytes of a trusted source, copied in the kernel at once.
  uint64_t run_offset = 0, run_length = 0;
  auto copy_run = [&]() -> Status {
    if (run_length == 0) return Status::Ok();
    Status copied = writer.AppendCopy(source.fd.get(), run_offset, run_length);
    if (copied.ok() && !SourceUnchanged(source)) {
      copied = UnavailableError(
          "a file here changed while its bytes were copied; will sync "
          "next time");
    }
    if (copied.ok()) tally.bytes_reused += run_length;
    run_length = 0;
    return copied;
  };
  auto fill = [&]() -> Status {
    uint64_t at = start;
    for (size_t i = first; i < content.chunks.size(); ++i) {
      const Chunk& chunk = content.chunks[i];
      const ChunkPlace* place = here[i] ? FindLocalChunk(chunk) : nullptr;
      if (place != nullptr && (source.fd.get() < 0 || source.item != place->item)) {
        MESHSYNC_RETURN_IF_ERROR(copy_run());
        if (!OpenSource(place->item, source)) place = nullptr;
      }
      if (place != nullptr && source.trusted && place->generation == source.generation) {
        if (run_length == 0 || run_offset + run_length != place->offset) {
          MESHSYNC_RETURN_IF_ERROR(copy_run());
          run_offset = place->offset;
        }
        run_length += chunk.length;
        at += chunk.length;
        continue;
      }
      MESHSYNC_RETURN_IF_ERROR(copy_run());
      buffer.resize(chunk.length);
      // The index may be stale: the hash decides, and the peer has it.
      if (place != nullptr && ReadFull(source.fd.get(), buffer, place->offset) &&
          HashBytes(buffer.data(), buffer.size()) == chunk.hash) {
        tally.bytes_reused += chunk.length;
      } else if (elsewhere[i] && chunk_finder_->Read(chunk, buffer)) {
        tally.bytes_reused += chunk.length;
      } else {
        MESHSYNC_RETURN_IF_ERROR(reader.ReadAt(at, buffer));
        if (HashBytes(buffer.data(), buffer.size()) != chunk.hash) {
          return UnavailableError("received data does not match its hash");
        }
        tally.bytes_fetched += chunk.length;
      }
      MESHSYNC_RETURN_IF_ERROR(writer.Append(buffer.data(), buffer.size()));
      at += chunk.length;
    }
    return copy_run();
  };
  Status filled = fill();
  // Everything appended was checked: keep it for the next attempt too.
  Status finished = writer.Finish();
  return filled.ok() ? finished : filled;
}

Status FileProvider::WriteTemp(const EntryState& content, uint32_t mode,
                               const DataOpener& open_data, std::string& temp_name, int near,
                               const FinalPlace* place) {
  if (!open_data) return FailedPreconditionError("no data to copy the file from");
  MESHSYNC_ASSIGN_OR_RETURN(std::unique_ptr<DataReader> reader, open_data(kContentUnit));
  // Data from elsewhere: this folder's own files are worth looking through.
  if (reader->LocalFd() < 0 && !chunk_index_loaded_) MESHSYNC_RETURN_IF_ERROR(LoadChunkIndex());
  temp_name = NextTempName();
  const bool tried_tmpfile = tmpfile_works_;
  TempWrite write;
  Status written =
      WriteTempFrom(content, mode, *reader, tried_tmpfile, near, temp_name, write, place);
  counters_ += write.tally;
  if (write.no_tmpfile) tmpfile_works_ = false;  // not on this file system
  if (!written.ok() && write.name_failed && tried_tmpfile) {
    // No /proc here: write the file again, named from the start.
    reader.reset();
    return WriteTemp(content, mode, open_data, temp_name);
  }
  MESHSYNC_RETURN_IF_ERROR(written);
  if (write.placed) temp_name.clear();
  wrote_ = true;
  return Status::Ok();
}

Status FileProvider::WriteTempFrom(const EntryState& content, uint32_t mode, DataReader& reader,
                                   bool try_tmpfile, int near, std::string& temp_name,
                                   TempWrite& write, const FinalPlace* place) const {
  if (reader.size() != content.size) {
    return UnavailableError("the source file changed since it was scanned");
  }
  const bool local = reader.LocalFd() >= 0;
  // What a broken transfer fetched stays for the next attempt (every chunk
  // in it was checked against its hash); any other file is a NewFile.
  Fd partial;
  if (!local && content.size >= kResumableBytes) {
    std::string name = PartialName(content.chunks, content.size);
    partial = Fd(openat(tmp_fd_, name.c_str(), O_CREAT | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600));
    // Another process or thread fetching the same content holds it: use a
    // file of our own.
    if (partial.get() >= 0 && flock(partial.get(), LOCK_EX | LOCK_NB) != 0) partial = Fd();
    if (partial.get() >= 0) temp_name = std::move(name);
  }
  std::optional<NewFile> file;
  if (partial.get() < 0) {
    file.emplace(tmp_fd_, temp_name, near, try_tmpfile);
    write.no_tmpfile = file->tmpfile_failed();
  }
  const int out = file ? file->fd() : partial.get();
  if (out < 0) return UnavailableError(Errno("cannot create a temporary file", errno));
  if (local) {
    MESHSYNC_RETURN_IF_ERROR(CopyFileData(reader.LocalFd(), out, content.size).status());
  } else {
    uint64_t have = 0;
    struct stat st;
    if (!file && fstat(out, &st) == 0) have = static_cast<uint64_t>(st.st_size);
    MESHSYNC_RETURN_IF_ERROR(FetchInto(content, reader, out, have, write.tally));
  }
  MESHSYNC_RETURN_IF_ERROR(reader.Verify());
  MESHSYNC_RETURN_IF_ERROR(SetModeAndTime(out, mode, content.mtime_ns));
  if (file) {
    Status named = place != nullptr ? file->Finish(&place->name, place->rel) : file->Finish();
    if (!named.ok() && file->tmpfile_failed()) {
      write.no_tmpfile = true;
      write.name_failed = true;
    }
    MESHSYNC_RETURN_IF_ERROR(named);
    write.placed = file->placed();
  }
  write.tally.bytes_copied += content.size;
  return Status::Ok();
}

std::string FileProvider::NextTempName() {
  return "t" + std::to_string(++temp_counter_) + "-" + pid_;
}

Status FileProvider::EnsureParent(const ItemId& parent, int depth) {
  if (parent == ItemId::Min()) return Status::Ok();
  if (const Node* node = nodes_.Find(parent); node != nullptr) {
    if (node->kind != Kind::kDirectory) {
      return FailedPreconditionError("the parent of an item is not a folder");
    }
    return Status::Ok();
  }
  if (depth > static_cast<int>(kMaxDepth))
    return FailedPreconditionError("folders nested too deep");
  // A folder deleted here while something in it changed elsewhere: the
  // change wins, so the folder comes back (and is detected next time).
  MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, store_.GetItem(parent));
  if (!item.has_value() || !item->tombstone) {
    return UnavailableError("its folder has not arrived yet; will sync next time");
  }
  auto state = DecodeState(item->provider_state);
  ItemId grandparent;
  std::string name;
  if (!state.ok() || state->kind != Kind::kDirectory ||
      !DecodePlacement(item->key, grandparent, name).ok()) {
    return UnavailableError("its folder has not arrived yet; will sync next time");
  }
  MESHSYNC_RETURN_IF_ERROR(EnsureParent(grandparent, depth + 1));
  EntryState dir;
  dir.kind = Kind::kDirectory;
  dir.mode = state->mode;
  if (!options_.dry_run) {
    MESHSYNC_ASSIGN_OR_RETURN(int raw, OpenDirOf(grandparent));
    Fd fd(raw);
    if (mkdirat(fd.get(), name.c_str(), state->mode | 0700) != 0 && errno != EEXIST) {
      return UnavailableError(Errno("cannot restore folder " + name, errno));
    }
    struct stat st;
    if (fstatat(fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
      return UnavailableError("cannot restore folder " + name);
    }
    FillStat(st, dir);
    wrote_ = true;
  }
  AddNode(parent, NodeOf(grandparent, name, dir));
  if (auto path = PathOf(parent)) Record("restore-folder", *path, "kept for a changed file inside");
  return Status::Ok();
}

void FileProvider::SaveChanges(std::span<const SaveRequest> requests,
                               std::vector<Result<SaveResult>>& results) {
  if (index_loaded_ || LoadIndex().ok()) PrepareNewFiles(requests);
  for (const SaveRequest& request : requests) results.push_back(SaveChange(request));
  for (const auto& [id, temp] : prepared_) unlinkat(tmp_fd_, temp.c_str(), 0);  // not used
  prepared_.clear();
}

void FileProvider::PrepareNewFiles(std::span<const SaveRequest> requests) {
  if (options_.dry_run || options_.hash_threads < 2) return;
  struct Job {
    ItemId id;
    EntryState content;
    uint32_t mode = 0644;
    std::unique_ptr<DataReader> reader;
    int near = -1;  // the folder it goes to, if it is there (an fd of `dirs`)
    std::string temp;
    TempWrite write;
    bool done = false;
  };
  // A bounded number of files open at once.
  constexpr size_t kWindow = 256;
  size_t from = 0;
  while (from < requests.size()) {
    std::vector<Job> jobs;
    std::unordered_map<ItemId, Fd, Id128Hash> dirs;
    for (; from < requests.size() && jobs.size() < kWindow; ++from) {
      const SaveRequest& request = requests[from];
      if (request.action != SaveAction::kCreate || request.local != nullptr || !request.open_data)
        continue;
      Job job;
      job.id = request.id;
      bool content = false, placed = false;
      ItemId parent;
      for (const UnitData& unit : request.units) {
        if (unit.unit == kContentUnit) {
          auto incoming = DecodeContent(unit.data);
          if (!incoming.ok() || incoming->kind != Kind::kFile || incoming->size == 0) break;
          job.content = *std::move(incoming);
          content = true;
        } else if (unit.unit == kPlacementUnit) {
          std::string name;
          placed = DecodePlacement(unit.data, parent, name).ok();
        } else if (unit.unit == kAttributesUnit) {
          auto mode = DecodeMode(unit.data);
          if (mode.ok()) job.mode = *mode;
        }
      }
      if (!content || !placed) continue;
      auto reader = request.open_data(kContentUnit);
      if (reader.ok() && (*reader)->LocalFd() < 0) {
        // Data from a peer: opening it may cost a round trip, and a batch's
        // fetches are bound by the CPU both ends share here (fetching two
        // large files at once did not shorten node_bench's large phase:
        // 5.35-5.99 s -> 5.25-5.94 s, 10 MiB more RSS). Such a batch is left
        // to SaveChange whole, having opened one file for nothing.
        from = requests.size();
        break;
      }
      if (!reader.ok()) continue;
      job.reader = *std::move(reader);
      if (const Node* node = nodes_.Find(parent);
          parent == ItemId::Min() || (node != nullptr && node->kind == Kind::kDirectory)) {
        auto dir = dirs.find(parent);
        if (dir == dirs.end()) {
          auto fd = OpenDirOf(parent);
          dir = dirs.emplace(parent, Fd(fd.ok() ? *fd : -1)).first;
        }
        job.near = dir->second.get();
      }
      job.temp = NextTempName();
      jobs.push_back(std::move(job));
    }
    if (jobs.size() < 2) continue;  // nothing to do at once
    // The largest first, so that no thread is left copying one at the end.
    std::stable_sort(jobs.begin(), jobs.end(),
                     [](const Job& a, const Job& b) { return a.content.size > b.content.size; });
    const bool tmpfile = tmpfile_works_;
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t j; (j = next.fetch_add(1)) < jobs.size();) {
        Job& job = jobs[j];
        job.done = WriteTempFrom(job.content, job.mode, *job.reader, tmpfile, job.near, job.temp,
                                 job.write)
                       .ok();
      }
    };
    unsigned n = std::min<unsigned>(options_.hash_threads, static_cast<unsigned>(jobs.size()));
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < n; ++i) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    for (Job& job : jobs) {
      counters_ += job.write.tally;
      // Not on this file system: SaveChange writes named files from now on.
      if (job.write.no_tmpfile) tmpfile_works_ = false;
      if (!job.done) continue;
      wrote_ = true;
      prepared_.emplace(job.id, std::move(job.temp));
    }
  }
}

Result<SaveResult> FileProvider::SaveChange(const SaveRequest& request) {
  if (!index_loaded_) MESHSYNC_RETURN_IF_ERROR(LoadIndex());
  if (request.action == SaveAction::kDelete) return Delete(*request.local);
  return Apply(request);
}

Result<SaveResult> FileProvider::Delete(const ItemMetadata& local) {
  SaveResult result{local.key, local.provider_state, {}};
  const Node* node = nodes_.Find(local.id);
  if (node == nullptr) return result;  // not here (already gone)
  std::optional<std::string> rel = PathOf(local.id);
  if (!rel.has_value()) return result;
  if (node->kind == Kind::kDirectory) {
    // Removed once what is in it has gone (see CommitChanges).
    pending_rmdirs_.push_back(local.id);
    Record("delete", *rel + "/");
    return result;
  }
  Record("delete", *rel);
  if (options_.dry_run) {
    RemoveNode(local.id);
    return result;
  }
  MESHSYNC_ASSIGN_OR_RETURN(EntryState state, DecodeState(local.provider_state));
  MESHSYNC_ASSIGN_OR_RETURN(int raw, OpenDirOf(node->parent));
  Fd dir(raw);
  std::string name = node->name;
  Status unchanged = CheckUnchanged(dir.get(), name, state, *rel);
  if (!unchanged.ok()) {
    struct stat st;
    if (fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
      RemoveNode(local.id);  // deleted here too
      return result;
    }
    return unchanged;  // edited meanwhile: the edit will win next time
  }
  MESHSYNC_RETURN_IF_ERROR(MoveToTrash(dir.get(), name, *rel));
  RemoveNode(local.id);
  return result;
}

Result<SaveResult> FileProvider::Apply(const SaveRequest& request) {
  const ItemMetadata* local = request.local;
  bool here = local != nullptr && !local->tombstone && nodes_.Contains(request.id);
  EntryState current;
  ItemId parent;
  std::string name;
  if (here) {
    MESHSYNC_ASSIGN_OR_RETURN(current, DecodeState(local->provider_state));
    MESHSYNC_RETURN_IF_ERROR(DecodePlacement(local->key, parent, name));
  }
  EntryState next = current;
  uint32_t mode = current.mode;
  bool content = false, placement = false, attributes = false;
  for (const UnitData& unit : request.units) {
    if (unit.unit == kContentUnit) {
      MESHSYNC_ASSIGN_OR_RETURN(EntryState incoming, DecodeContent(unit.data));
      next.kind = incoming.kind;
      next.size = incoming.size;
      next.mtime_ns = incoming.mtime_ns;
      next.chunks = std::move(incoming.chunks);
      next.target = std::move(incoming.target);
      content = true;
    } else if (unit.unit == kPlacementUnit) {
      MESHSYNC_RETURN_IF_ERROR(DecodePlacement(unit.data, parent, name));
      placement = true;
    } else if (unit.unit == kAttributesUnit) {
      MESHSYNC_ASSIGN_OR_RETURN(mode, DecodeMode(unit.data));
      attributes = true;
    }
  }
  for (ChangeUnitId unit : request.removed_units) {
    if (unit == kContentUnit || unit == kPlacementUnit) {
      return InvalidArgumentError("a file cannot lose its content or its place");
    }
  }
  if (!here && !(content && placement)) {
    return InvalidArgumentError("a new item needs its content and its place");
  }
  if (!attributes && !here) mode = next.kind == Kind::kDirectory ? 0755 : 0644;
  if (here && next.kind != current.kind) {
    return InvalidArgumentError("an item cannot change from " +
                                std::string(KindName(current.kind)) + " to " +
                                std::string(KindName(next.kind)));
  }
  if (parent == request.id) return InvalidArgumentError("an item cannot be its own folder");
  SaveResult result;
  // Two concurrent moves can put each of two folders inside the other. The
  // move that arrives second would make a cycle: it is not applied, and the
  // folder's place here spreads as a new change instead, so every replica
  // ends with both folders where neither move put them into the other.
  if (next.kind == Kind::kDirectory && here && placement) {
    for (ItemId up = parent; !(up == ItemId::Min());) {
      if (up == request.id) {
        parent = nodes_.At(request.id).parent;
        name = nodes_.At(request.id).name;
        result.rewritten_units.push_back(kPlacementUnit);
        break;
      }
      const Node* node = nodes_.Find(up);
      if (node == nullptr) break;
      up = node->parent;
    }
  }
  MESHSYNC_RETURN_IF_ERROR(EnsureParent(parent));
  bool moving = here && placement &&
                (!(parent == nodes_.At(request.id).parent) || name != nodes_.At(request.id).name);
  std::string target = name;
  if (!here || moving) {
    std::optional<ItemId> occupant = FindChild(parent, name);
    if (occupant.has_value() && !(*occupant == request.id)) {
      // Two items, one name: the one arriving takes another name, which
      // spreads as its own placement change.
      uint64_t now = SystemClock().NowMillis();
      for (int n = 0;; ++n) {
        target = ConflictName(name, now, options_.replica_name);
        if (n > 0)
          target = ConflictName(name + "-" + std::to_string(n), now, options_.replica_name);
        if (!FindChild(parent, target).has_value()) break;
      }
      result.rewritten_units.push_back(kPlacementUnit);
    }
  }
  std::optional<std::string> parent_rel = PathOf(parent);
  if (!parent_rel.has_value()) return UnavailableError("its folder is not here");
  std::string rel = Join(*parent_rel, target);
  bool rewrite = content && (!here || next.kind != Kind::kFile ||
                             !(next.chunks == current.chunks) || next.kind == Kind::kSymlink);
  if (here && next.kind == Kind::kSymlink && next.target == current.target) rewrite = false;
  if (here && next.kind == Kind::kDirectory) rewrite = false;
  Record(!here    ? "create"
         : moving ? "move"
                  : "update",
         rel + (next.kind == Kind::kDirectory ? "/" : ""),
         !here    ? std::string(KindName(next.kind))
         : moving ? "from " + PathOf(request.id).value_or("?")
                  : "");
  if (moving) ++counters_.moved;

  if (options_.dry_run) {
    next.mode = mode;
    result.key = EncodePlacement(parent, target);
    result.provider_state = EncodeState(next);
    AddNode(request.id, NodeOf(parent, target, next));
    return result;
  }

  MESHSYNC_ASSIGN_OR_RETURN(int raw_dir, OpenDirOf(parent));
  Fd dir(raw_dir);
  Fd old_dir;
  std::string old_name;
  std::string old_rel;
  if (here) {
    const Node& node = nodes_.At(request.id);
    old_name = node.name;
    old_rel = PathOf(request.id).value_or(node.name);
    MESHSYNC_ASSIGN_OR_RETURN(int raw_old, OpenDirOf(node.parent));
    old_dir = Fd(raw_old);
    MESHSYNC_RETURN_IF_ERROR(CheckUnchanged(old_dir.get(), old_name, current, old_rel));
  }

  if (next.kind == Kind::kDirectory) {
    if (!here) {
      if (mkdirat(dir.get(), target.c_str(), mode) != 0) {
        struct stat st;
        if (errno != EEXIST || fstatat(dir.get(), target.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode)) {
          return UnavailableError(rel + " appeared since the last scan; will sync next time");
        }
      }
    } else if (moving) {
      if (renameat2(old_dir.get(), old_name.c_str(), dir.get(), target.c_str(), RENAME_NOREPLACE) !=
          0) {
        return UnavailableError(Errno("cannot move " + old_rel + " to " + rel, errno));
      }
    }
    if (fchmodat(dir.get(), target.c_str(), mode, 0) != 0) {
      return UnavailableError(Errno("cannot set the mode of " + rel, errno));
    }
    wrote_ = true;
  } else if (rewrite) {
    std::string temp;
    if (next.kind == Kind::kSymlink) {
      temp = "l" + std::to_string(++temp_counter_) + "-" + pid_;
      if (symlinkat(next.target.c_str(), tmp_fd_, temp.c_str()) != 0) {
        return UnavailableError(Errno("cannot create symlink " + rel, errno));
      }
    } else {
      if (auto prepared = prepared_.find(request.id); prepared != prepared_.end()) {
        temp = std::move(prepared->second);  // written by PrepareNewFiles
        prepared_.erase(prepared);
      } else {
        // A new file may go straight to its place (left empty if it did).
        const FinalPlace place{target, rel};
        MESHSYNC_RETURN_IF_ERROR(
            WriteTemp(next, mode, request.open_data, temp, dir.get(), here ? nullptr : &place));
      }
    }
    if (temp.empty()) {
      // In place already.
    } else if (here && !moving) {
      // Swap the new file in, then check that what came out is what we
      // scanned; if it was edited meanwhile, swap back and leave it.
      if (renameat2(tmp_fd_, temp.c_str(), dir.get(), target.c_str(), RENAME_EXCHANGE) != 0) {
        unlinkat(tmp_fd_, temp.c_str(), 0);
        return UnavailableError(Errno("cannot replace " + rel, errno));
      }
      Status same = CheckUnchanged(tmp_fd_, temp, current, rel);
      if (!same.ok()) {
        renameat2(tmp_fd_, temp.c_str(), dir.get(), target.c_str(), RENAME_EXCHANGE);
        unlinkat(tmp_fd_, temp.c_str(), 0);
        return same;
      }
      MESHSYNC_RETURN_IF_ERROR(MoveToTrash(tmp_fd_, temp, rel));
    } else {
      if (renameat2(tmp_fd_, temp.c_str(), dir.get(), target.c_str(), RENAME_NOREPLACE) != 0) {
        int err = errno;
        unlinkat(tmp_fd_, temp.c_str(), 0);
        if (err == EEXIST)
          return UnavailableError(rel + " appeared since the last scan; will sync next time");
        return UnavailableError(Errno("cannot create " + rel, err));
      }
      if (moving) MESHSYNC_RETURN_IF_ERROR(MoveToTrash(old_dir.get(), old_name, old_rel));
    }
  } else {
    if (moving && renameat2(old_dir.get(), old_name.c_str(), dir.get(), target.c_str(),
                            RENAME_NOREPLACE) != 0) {
      return UnavailableError(Errno("cannot move " + old_rel + " to " + rel, errno));
    }
    if (next.kind == Kind::kFile && content && next.mtime_ns != current.mtime_ns) {
      MtimeOnly times(next.mtime_ns);
      utimensat(dir.get(), target.c_str(), times.times, AT_SYMLINK_NOFOLLOW);
    }
    wrote_ = true;
  }
  if (next.kind == Kind::kFile && attributes && !rewrite) {
    if (fchmodat(dir.get(), target.c_str(), mode, 0) != 0) {
      return UnavailableError(Errno("cannot set the mode of " + rel, errno));
    }
  }
  struct stat st;
  if (fstatat(dir.get(), target.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return UnavailableError(Errno(rel, errno));
  }
  FillStat(st, next);
  if (next.kind == Kind::kFile && (next.size != static_cast<uint64_t>(st.st_size))) {
    return UnavailableError(rel + " changed while it was written; will sync next time");
  }
  result.key = EncodePlacement(parent, target);
  MarkRacy(next);
  result.provider_state = EncodeState(next);
  AddNode(request.id, NodeOf(parent, target, next));
  IndexChunks(request.id, next);
  return result;
}

Status FileProvider::CommitChanges() {
  if (!pending_rmdirs_.empty()) {
    // Deepest first, once everything in them has been deleted. A folder
    // that still holds a surviving item (edited here, or not synced) stays,
    // and the next scan brings it back.
    auto depth = [this](const ItemId& id) {
      size_t d = 0;
      for (const Node* node = nodes_.Find(id); node != nullptr; node = nodes_.Find(node->parent)) {
        ++d;
      }
      return d;
    };
    std::sort(pending_rmdirs_.begin(), pending_rmdirs_.end(),
              [&](const ItemId& a, const ItemId& b) { return depth(a) > depth(b); });
    std::vector<ItemId> left;
    for (const ItemId& id : pending_rmdirs_) {
      const Node* node = nodes_.Find(id);
      if (node == nullptr) continue;
      if (node->children > 0) {
        left.push_back(id);
        ++counters_.folders_kept;
        continue;
      }
      if (options_.dry_run) {
        RemoveNode(id);
        continue;
      }
      auto dir = OpenDirOf(node->parent);
      if (!dir.ok()) continue;
      Fd fd(*dir);
      if (unlinkat(fd.get(), node->name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) {
        RemoveNode(id);
        wrote_ = true;
      } else {
        left.push_back(id);
        ++counters_.folders_kept;
      }
    }
    pending_rmdirs_ = std::move(left);
  }
  if (wrote_ && !options_.dry_run && options_.fsync) {
    // Once per batch, not per file: an fdatasync costs about 0.3 ms here.
    if (syncfs(root_fd_) != 0) return UnavailableError(Errno("syncfs", errno));
  }
  wrote_ = false;
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Conflicts and filters.

Result<std::string> FileProvider::MergeUnit(const ItemId& item, ChangeUnitId unit,
                                            std::string_view local, std::string_view remote) {
  (void)item;
  // The "newer" policy: the content with the later mtime wins; for the
  // other units, and on a tie, a deterministic choice.
  if (unit == kContentUnit) {
    auto a = DecodeContent(local);
    auto b = DecodeContent(remote);
    if (a.ok() && b.ok() && a->mtime_ns != b->mtime_ns) {
      return std::string(a->mtime_ns > b->mtime_ns ? local : remote);
    }
  }
  return std::string(std::max(local, remote));
}

Result<std::optional<NewItem>> FileProvider::KeepLosingValue(const ItemId& copy_id,
                                                             const LosingValue& loser) {
  if (loser.unit != kContentUnit) return std::optional<NewItem>();
  if (!index_loaded_) MESHSYNC_RETURN_IF_ERROR(LoadIndex());
  auto lost = DecodeContent(loser.data);
  auto kept = DecodeContent(loser.winner_data);
  if (!lost.ok() || !kept.ok() || lost->kind != Kind::kFile) return std::optional<NewItem>();
  if (kept->kind == Kind::kFile && lost->chunks == kept->chunks) {
    return std::optional<NewItem>();  // the same bytes: nothing to keep
  }
  const Node* node = nodes_.Find(loser.item);
  if (node == nullptr) return std::optional<NewItem>();
  ItemId parent = node->parent;
  uint32_t mode = node->mode;
  std::string base = ConflictName(node->name, HybridLogicalClock::MillisOf(loser.loser_tick),
                                  loser.loser_replica.ShortName());
  std::string name = base;
  for (int n = 2; FindChild(parent, name).has_value(); ++n) {
    const Node& there = nodes_.At(*FindChild(parent, name));
    if (there.kind == Kind::kFile && there.digest == DigestWord(lost->chunks)) {
      return std::optional<NewItem>();  // kept already
    }
    name = base + "-" + std::to_string(n);
  }
  std::string rel = Join(PathOf(parent).value_or(""), name);
  Record("conflict-copy", rel, "losing edit by " + loser.loser_replica.ShortName());
  if (options_.dry_run) return std::optional<NewItem>();
  std::string temp;
  MESHSYNC_RETURN_IF_ERROR(WriteTemp(*lost, mode, loser.open_data, temp));
  MESHSYNC_ASSIGN_OR_RETURN(int raw, OpenDirOf(parent));
  Fd dir(raw);
  if (renameat2(tmp_fd_, temp.c_str(), dir.get(), name.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    unlinkat(tmp_fd_, temp.c_str(), 0);
    return UnavailableError(Errno("cannot create conflict copy " + rel, err));
  }
  struct stat st;
  if (fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return UnavailableError(Errno(rel, errno));
  }
  EntryState state = *lost;
  FillStat(st, state);
  MarkRacy(state);
  NewItem item;
  item.units = {kContentUnit, kPlacementUnit, kAttributesUnit};
  item.key = EncodePlacement(parent, name);
  item.provider_state = EncodeState(state);
  AddNode(copy_id, NodeOf(parent, name, state));
  return std::optional<NewItem>(std::move(item));
}

bool FileProvider::Equivalent(ChangeUnitId unit, std::string_view a, std::string_view b) const {
  if (a == b) return true;
  if (unit != kContentUnit) return false;
  auto x = DecodeContent(a);
  auto y = DecodeContent(b);
  return x.ok() && y.ok() && x->kind == y->kind && x->size == y->size && x->chunks == y->chunks &&
         x->target == y->target;
}

bool FileProvider::Accepts(const ItemId& item, std::span<const UnitData> units) const {
  (void)item;
  ItemId parent;
  std::string name;
  bool is_dir = false;
  bool placed = false;
  for (const UnitData& unit : units) {
    if (unit.unit == kPlacementUnit) placed = DecodePlacement(unit.data, parent, name).ok();
    if (unit.unit == kContentUnit && !unit.data.empty()) {
      is_dir = static_cast<uint8_t>(unit.data[0]) == static_cast<uint8_t>(Kind::kDirectory);
    }
  }
  if (!placed) return true;
  std::optional<std::string> dir = PathOf(parent);
  if (!dir.has_value()) return true;
  return !options_.ignore.Ignored(Join(*dir, name), is_dir);
}

}  // namespace meshsync::files
