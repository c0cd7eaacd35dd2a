// Folder: a directory opened as a replica, and two-way sync of two folders.
//
// A folder becomes a replica on first use: `DIR/.meshsync/` holds its
// SQLite metadata (meta.db), a lock, temporary files and the trash. The
// directory is never synced itself. One process syncs a folder at a time
// (an flock on .meshsync/lock); a preview runs on a copy of the metadata in a
// temporary directory, so it changes nothing at all.
#ifndef MESHSYNC_PROVIDERS_FILES_FOLDER_H_
#define MESHSYNC_PROVIDERS_FILES_FOLDER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "files/file_provider.h"
#include "meshsync/sync.h"

namespace meshsync::files {

struct FolderOptions {
  std::vector<std::string> ignore;  // patterns, as --ignore gives them
  bool preview = false;
  bool fsync = false;   // see FileProviderOptions::fsync
  int trash_days = 30;  // trash older than this is removed when the folder is opened
};

class Folder {
 public:
  // Fails with a one-line reason: missing or unreadable folder, corrupt
  // metadata, bad ignore pattern, another sync running.
  static Result<std::unique_ptr<Folder>> Open(const std::string& path,
                                              const FolderOptions& options);
  ~Folder();

  // Closes the metadata store, removes a preview's copy of it and releases
  // the lock: everything that matters on disk. The in-memory index stays
  // until destruction, so a process that ends right after (a command) need
  // not free it item by item. Nothing but the destructor may follow.
  void Close();

  Replica& replica() { return *replica_; }
  FileProvider& provider() { return *provider_; }
  MetadataStore& store() { return *store_; }
  const std::string& path() const { return path_; }       // as given
  const std::string& real_path() const { return real_; }  // canonical
  // The SQLite metadata store (DIR/.meshsync/meta.db).
  std::string metadata_path() const;
  // What reads this folder for a peer (see OpenFolderReader); a copy, so
  // it stays valid after the folder is closed.
  struct ReaderSpec {
    std::string real_path;
    IgnoreRules ignore;
  };
  ReaderSpec reader_spec() const { return ReaderSpec{real_, ignore_}; }

 private:
  Folder() = default;
  std::string path_;
  std::string real_;
  std::string preview_dir_;  // removed on close
  int lock_fd_ = -1;
  IgnoreRules ignore_;
  std::unique_ptr<MetadataStore> store_;
  std::unique_ptr<FileProvider> provider_;
  std::unique_ptr<Replica> replica_;
};

// A provider over `store` (a snapshot of the folder's metadata, see
// OpenSqliteSnapshot) that reads the folder for a peer: LoadChangeData and
// OpenData, with the folder's ignore rules. It must not be used to write.
Result<std::unique_ptr<FileProvider>> OpenFolderReader(const Folder::ReaderSpec& spec,
                                                       MetadataStore& store);

// Whether two folders may be synced: not the same, neither inside the other.
Status CheckPair(const Folder& a, const Folder& b);
// The same, and that both exist, before anything is opened or created.
Status CheckPaths(const std::string& a, const std::string& b);

enum class FolderPolicy { kKeepBoth, kNewer, kAWins, kBWins };

struct FolderSyncOptions {
  FolderPolicy policy = FolderPolicy::kKeepBoth;
  size_t batch_size = 1000;
  // Sessions run until neither side has anything new to send (a session can
  // leave work for another: a file renamed to avoid a collision, a folder
  // kept for an edited file, a move into a folder that arrives later).
  int max_rounds = 5;
  std::function<void(const SyncProgress&)> on_progress;
  std::function<bool()> should_cancel;
};

struct FolderDirection {
  DirectionReport engine;  // summed over rounds
  uint64_t moved = 0;
  uint64_t bytes_copied = 0;
};

struct FolderSyncReport {
  FolderDirection a_to_b;
  FolderDirection b_to_a;
  int rounds = 0;
  bool cancelled = false;
  // "PATH: reason" for everything not synced, after the last round.
  std::vector<std::string> problems;
};

// Two-way sync: detect both folders in parallel, run sessions until settled.
Result<FolderSyncReport> SyncFolders(Folder& a, Folder& b, const FolderSyncOptions& options);

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_FOLDER_H_
