#include "files/folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>

namespace meshsync::files {
namespace {

namespace fs = std::filesystem;

Result<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::string();
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > (1 << 20)) return InvalidArgumentError(path + ": larger than 1 MiB");
  return text;
}

Result<std::string> RealFolder(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return NotFoundError(path + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return InvalidArgumentError(path + ": not a folder");
  char real[PATH_MAX];
  if (realpath(path.c_str(), real) == nullptr) {
    return UnavailableError(path + ": " + std::strerror(errno));
  }
  return std::string(real);
}

// Removes trash folders (named by their UTC stamp) older than `days`.
void PurgeTrash(const std::string& meta, int days) {
  std::error_code ec;
  fs::path trash = fs::path(meta) / "trash";
  if (!fs::is_directory(trash, ec)) return;
  time_t cutoff = time(nullptr) - static_cast<time_t>(days) * 86400;
  for (const auto& entry : fs::directory_iterator(trash, ec)) {
    std::string name = entry.path().filename().string();
    struct tm tm {};
    const char* end = strptime(name.c_str(), "%Y%m%d-%H%M%S", &tm);
    if (end == nullptr || *end != '\0') continue;
    if (timegm(&tm) < cutoff) fs::remove_all(entry.path(), ec);
  }
}

}  // namespace

Folder::~Folder() {
  Close();
  provider_.reset();
}

void Folder::Close() {
  replica_.reset();
  store_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
  if (!preview_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(preview_dir_, ec);
    preview_dir_.clear();
  }
}

Result<std::unique_ptr<Folder>> Folder::Open(const std::string& path,
                                             const FolderOptions& options) {
  std::unique_ptr<Folder> f(new Folder());
  f->path_ = path;
  MESHSYNC_ASSIGN_OR_RETURN(f->real_, RealFolder(path));
  std::string meta = f->real_ + "/" + std::string(kMetaDirName);
  struct stat meta_st;
  bool has_meta = lstat(meta.c_str(), &meta_st) == 0;
  if (has_meta && !S_ISDIR(meta_st.st_mode)) {
    return FailedPreconditionError(meta + " exists and is not a folder");
  }
  std::string db = meta + "/meta.db";
  std::string db_path = db;
  if (options.preview) {
    char tmpl[] = "/tmp/meshsync-preview-XXXXXX";
    if (mkdtemp(tmpl) == nullptr)
      return UnavailableError(std::string("mkdtemp: ") + std::strerror(errno));
    f->preview_dir_ = tmpl;
    db_path = f->preview_dir_ + "/meta.db";
    std::error_code ec;
    if (fs::exists(db)) {
      // The WAL holds the latest commits; both files together are the store.
      fs::copy_file(db, db_path, ec);
      if (!ec && fs::exists(db + "-wal")) fs::copy_file(db + "-wal", db_path + "-wal", ec);
      if (ec) return UnavailableError("cannot copy " + db + ": " + ec.message());
    }
  } else {
    if (!has_meta && mkdir(meta.c_str(), 0700) != 0) {
      return UnavailableError(meta + ": " + std::strerror(errno));
    }
    f->lock_fd_ = ::open((meta + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f->lock_fd_ < 0) return UnavailableError(meta + "/lock: " + std::strerror(errno));
    if (flock(f->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      return UnavailableError(path + " is being synced by another meshsync process");
    }
    PurgeTrash(meta, options.trash_days);
  }

  FileProviderOptions provider_options;
  provider_options.dry_run = options.preview;
  provider_options.fsync = options.fsync;
  for (const std::string& pattern : options.ignore) {
    MESHSYNC_RETURN_IF_ERROR(provider_options.ignore.Add(pattern, "--ignore " + pattern));
  }
  MESHSYNC_ASSIGN_OR_RETURN(std::string rules, ReadSmallFile(f->real_ + "/.meshsyncignore"));
  MESHSYNC_RETURN_IF_ERROR(provider_options.ignore.Add(rules, path + "/.meshsyncignore"));

  f->ignore_ = provider_options.ignore;
  // Without --fsync the files are left to the kernel's write-back, and
  // so is the metadata that need not outlive a power cut.
  MESHSYNC_ASSIGN_OR_RETURN(f->store_,
                            OpenSqliteStore(db_path, kProviderName, SystemRandom(),
                                            options.fsync ? StoreDurability::kEveryCommit
                                                          : StoreDurability::kOwnVersions));
  provider_options.replica_name = f->store_->state().id.ShortName();
  auto provider = FileProvider::Open(f->real_, *f->store_, std::move(provider_options));
  if (!provider.ok()) return provider.status();
  f->provider_ = std::move(*provider);
  MESHSYNC_ASSIGN_OR_RETURN(f->replica_, Replica::Open(*f->store_, *f->provider_));
  return f;
}

std::string Folder::metadata_path() const {
  return real_ + "/" + std::string(kMetaDirName) + "/meta.db";
}

Result<std::unique_ptr<FileProvider>> OpenFolderReader(const Folder::ReaderSpec& spec,
                                                       MetadataStore& store) {
  FileProviderOptions options;
  options.ignore = spec.ignore;
  options.dry_run = true;  // a reader never writes
  options.replica_name = store.state().id.ShortName();
  // The index of paths is loaded when the first file is read (OpenData):
  // a session that finds nothing new does without it.
  return FileProvider::Open(spec.real_path, store, std::move(options));
}

}  // namespace meshsync::files

namespace meshsync::files {

namespace {

Status CheckRealPaths(const std::string& x, const std::string& y, const std::string& a_path,
                      const std::string& b_path) {
  if (x == y) return InvalidArgumentError(a_path + " and " + b_path + " are the same folder");
  auto inside = [](const std::string& outer, const std::string& inner) {
    return inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 &&
           (outer == "/" || inner[outer.size()] == '/');
  };
  if (inside(x, y)) return InvalidArgumentError(b_path + " is inside " + a_path);
  if (inside(y, x)) return InvalidArgumentError(a_path + " is inside " + b_path);
  return Status::Ok();
}

}  // namespace

Status CheckPaths(const std::string& a, const std::string& b) {
  MESHSYNC_ASSIGN_OR_RETURN(std::string x, RealFolder(a));
  MESHSYNC_ASSIGN_OR_RETURN(std::string y, RealFolder(b));
  return CheckRealPaths(x, y, a, b);
}

Status CheckPair(const Folder& a, const Folder& b) {
  return CheckRealPaths(a.real_path(), b.real_path(), a.path(), b.path());
}

namespace {

// The session starts while the changes found are committed (Synchronize
// finishes the detection).
Status DetectBoth(Folder& a, Folder& b) {
  auto other = std::async(std::launch::async, [&b] { return b.replica().StartDetectChanges(); });
  Status first = a.replica().StartDetectChanges();
  Status second = other.get();
  MESHSYNC_RETURN_IF_ERROR(first.WithContext(a.path()));
  return second.ok() ? second : second.WithContext(b.path());
}

bool Applied(const DirectionReport& r) {
  return r.created + r.updated + r.deleted + r.conflicts > 0;
}

}  // namespace

Result<FolderSyncReport> SyncFolders(Folder& a, Folder& b, const FolderSyncOptions& options) {
  MESHSYNC_RETURN_IF_ERROR(CheckPair(a, b));
  FolderSyncReport report;
  MESHSYNC_RETURN_IF_ERROR(DetectBoth(a, b));
  while (true) {
    ++report.rounds;
    uint64_t moved_b = b.provider().counters().moved, moved_a = a.provider().counters().moved;
    uint64_t bytes_b = b.provider().counters().bytes_copied;
    uint64_t bytes_a = a.provider().counters().bytes_copied;
    uint64_t kept_before =
        a.provider().counters().folders_kept + b.provider().counters().folders_kept;
    SyncOptions sync;
    sync.detect_changes = false;
    sync.batch_size = options.batch_size;
    sync.on_progress = options.on_progress;
    sync.should_cancel = options.should_cancel;
    switch (options.policy) {
      case FolderPolicy::kKeepBoth:
        sync.policy = ConflictPolicy::kKeepBoth;
        break;
      case FolderPolicy::kNewer:
        sync.policy = ConflictPolicy::kMerge;
        break;
      case FolderPolicy::kAWins:
      case FolderPolicy::kBWins:
        break;
    }
    Result<SyncReport> session = InternalError("unreachable");
    if (options.policy == FolderPolicy::kAWins || options.policy == FolderPolicy::kBWins) {
      // One side's value wins: run each direction with the matching policy.
      bool a_wins = options.policy == FolderPolicy::kAWins;
      SyncReport both;
      sync.direction = SyncDirection::kAToB;
      sync.policy = a_wins ? ConflictPolicy::kSourceWins : ConflictPolicy::kDestinationWins;
      MESHSYNC_ASSIGN_OR_RETURN(SyncReport first, Synchronize(a.replica(), b.replica(), sync));
      both.a_to_b = std::move(first.a_to_b);
      both.cancelled = first.cancelled;
      if (!both.cancelled) {
        sync.direction = SyncDirection::kBToA;
        sync.policy = a_wins ? ConflictPolicy::kDestinationWins : ConflictPolicy::kSourceWins;
        MESHSYNC_ASSIGN_OR_RETURN(SyncReport second, Synchronize(a.replica(), b.replica(), sync));
        both.b_to_a = std::move(second.b_to_a);
        both.cancelled = second.cancelled;
      }
      session = std::move(both);
    } else {
      session = Synchronize(a.replica(), b.replica(), sync);
    }
    if (!session.ok()) return session.status();
    report.a_to_b.engine.Add(session->a_to_b);
    report.b_to_a.engine.Add(session->b_to_a);
    report.a_to_b.moved += b.provider().counters().moved - moved_b;
    report.b_to_a.moved += a.provider().counters().moved - moved_a;
    report.a_to_b.bytes_copied += b.provider().counters().bytes_copied - bytes_b;
    report.b_to_a.bytes_copied += a.provider().counters().bytes_copied - bytes_a;
    report.cancelled = session->cancelled;

    // Problems of this round, with paths.
    report.problems.clear();
    auto describe = [&report](Folder& source, Folder& dest, const DirectionReport& r) {
      for (const ItemError& error : r.errors) {
        std::optional<std::string> rel = source.provider().PathOf(error.item);
        if (!rel) rel = dest.provider().PathOf(error.item);
        report.problems.push_back(dest.path() + "/" + rel.value_or(error.item.ToHex()) + ": " +
                                  std::string(error.status.message()));
      }
    };
    describe(a, b, session->a_to_b);
    describe(b, a, session->b_to_a);
    if (report.cancelled) break;
    // Another round while sessions still change something: a change made
    // by this one (a name taken to avoid a collision, a folder kept for an
    // edited file, a move that would have made a cycle) must reach the
    // other side, and an item skipped because its folder came later in the
    // session goes through now. A preview changes nothing, so one round.
    // Only what this round left undone needs another: versions made while
    // applying, items skipped, folders kept for what is still in them.
    uint64_t left = session->a_to_b.local_versions + session->b_to_a.local_versions +
                    session->a_to_b.errors.size() + session->b_to_a.errors.size() +
                    a.provider().counters().folders_kept + b.provider().counters().folders_kept -
                    kept_before;
    bool applied = Applied(session->a_to_b) || Applied(session->b_to_a);
    bool preview = a.provider().dry_run() || b.provider().dry_run();
    if (!applied || left == 0 || preview) break;
    if (report.rounds >= options.max_rounds) {
      report.problems.push_back("the folders were still changing after " +
                                std::to_string(report.rounds) + " rounds; run sync again");
      break;
    }
    MESHSYNC_RETURN_IF_ERROR(DetectBoth(a, b));
  }
  for (const std::string& p : a.provider().problems())
    report.problems.push_back(a.path() + "/" + p);
  for (const std::string& p : b.provider().problems())
    report.problems.push_back(b.path() + "/" + p);
  return report;
}

}  // namespace meshsync::files
