// FileProvider: a folder on a local file system as a sync replica.
//
// Items are the files, directories and symbolic links under the root, except
// the root's `.meshsync/` (metadata, temporary files, trash) and ignored
// paths. Each item has three change units:
//   content    kind, size, mtime (ns) and the chunk list (length + SHA-256
//              of each content-defined chunk); a link's target
//   placement  parent item id + name: the item's key, so renaming a
//              directory changes one item however many files it holds
//   attributes permission bits
// so a rename on one side and an edit on the other merge without conflict.
//
// Change detection walks the tree and compares each entry with a stat cache
// (device, inode, size, mtime, ctime, mode) kept in the item's
// provider_state; only entries whose stat changed are read and hashed, on
// every core. Renames and moves are recognised by inode, else by content.
// Ids of new items derive from their parent's id and name (see
// PathDerivedId), so two replicas that create the same path create the same
// item: identical files match silently and different ones become a conflict.
//
// Applying a change never writes outside the root and never follows a
// symbolic link: directories are opened with RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS (openat2; where the kernel lacks it, a component at a
// time with O_NOFOLLOW and no ".."). File data goes to a temporary file under
// `.meshsync/tmp/` (copied in the kernel when the source is local), then is
// renamed into place; a file that changed since it was detected is not
// overwritten or deleted (kUnavailable: the engine retries it next session,
// when its change is seen). Deleted and overwritten files are moved to
// `.meshsync/trash/STAMP/PATH`. With options.fsync, CommitChanges syncs the
// file system once per batch, before the engine commits the batch's metadata.
//
// Thread-compatible.
#ifndef MESHSYNC_PROVIDERS_FILES_FILE_PROVIDER_H_
#define MESHSYNC_PROVIDERS_FILES_FILE_PROVIDER_H_

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "files/chunker.h"
#include "files/ignore.h"
#include "files/key_index.h"
#include "files/node_table.h"
#include "meshsync/metadata_store.h"
#include "meshsync/provider.h"

namespace meshsync::files {

inline constexpr ChangeUnitId kContentUnit = 1;
inline constexpr ChangeUnitId kPlacementUnit = 2;
inline constexpr ChangeUnitId kAttributesUnit = 3;
inline constexpr std::string_view kMetaDirName = ".meshsync";
inline constexpr std::string_view kProviderName = "files/1";

enum class Kind : uint8_t { kFile = 1, kDirectory = 2, kSymlink = 3 };
std::string_view KindName(Kind kind);

// The stat cache of one entry: what a scan compares with the file system.
struct FileStat {
  Kind kind = Kind::kFile;
  uint32_t mode = 0;  // permission bits
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;  // 0: "racy", read the file again next scan
};

// What the provider knows of one entry: its stat cache and content.
struct EntryState : FileStat {
  std::vector<Chunk> chunks;  // files
  std::string target;         // symlinks
};

std::string EncodeState(const EntryState& state);
Result<EntryState> DecodeState(std::string_view data);
// The content unit: kind, size, mtime, chunks or target.
std::string EncodeContent(const EntryState& state);
Result<EntryState> DecodeContent(std::string_view data);
// The placement unit (and key): parent id, then the name.
std::string EncodePlacement(const ItemId& parent, std::string_view name);
Status DecodePlacement(std::string_view data, ItemId& parent, std::string& name);

// Whether `name` may be a file name: not empty, no '/', no NUL, not "." or
// "..". Bytes that are not UTF-8 are allowed and kept as they are.
bool ValidName(std::string_view name);

// "STEM.conflict-YYYYMMDD-HHMMSS-REPLICA.EXT" (UTC).
std::string ConflictName(std::string_view name, uint64_t millis, std::string_view replica);

// The id a new item at (parent, name) gets: depth-prefixed (so parents are
// enumerated before their children) and derived from the path.
ItemId PathDerivedId(const ItemId& parent, std::string_view name, uint32_t depth);

struct FileProviderOptions {
  IgnoreRules ignore;
  bool dry_run = false;  // plan changes, touch nothing
  // Flush the file system (syncfs) before each batch's metadata is
  // committed, so that after a power loss the metadata never describes data
  // that did not reach the disk. Off by default, as in rsync, unison and cp:
  // a process kill never shows a partial file either way (see
  // docs/decisions.md).
  bool fsync = false;
  unsigned hash_threads = 0;  // 0: one per core
  std::string replica_name;   // short id, used in names made to avoid collisions
};

// One step of a dry run, or one thing done, for the user.
struct FileAction {
  std::string verb;  // "create", "update", "delete", "move", "conflict-copy", "rename"
  std::string path;
  std::string detail;
};

struct FileCounters {
  uint64_t moved = 0;
  uint64_t bytes_copied = 0;  // all bytes written into files, from wherever
  // Of those, from another replica: bytes found here instead (in files of
  // this folder, or in an interrupted transfer of the same content), and
  // bytes read from the other replica.
  uint64_t bytes_reused = 0;
  uint64_t bytes_resumed = 0;  // part of bytes_reused
  uint64_t bytes_fetched = 0;
  uint64_t trashed = 0;
  uint64_t folders_kept = 0;  // deleted elsewhere, kept for what is still in them
  // Change detection passes: over the whole folder, or where a watcher saw
  // changes (DetectChangesIn, when it did not have to look at everything).
  uint64_t full_scans = 0;
  uint64_t scoped_scans = 0;

  FileCounters& operator+=(const FileCounters& other) {
    moved += other.moved;
    bytes_copied += other.bytes_copied;
    bytes_reused += other.bytes_reused;
    bytes_resumed += other.bytes_resumed;
    bytes_fetched += other.bytes_fetched;
    trashed += other.trashed;
    folders_kept += other.folders_kept;
    full_scans += other.full_scans;
    scoped_scans += other.scoped_scans;
    return *this;
  }
};

// Other places a fetch may take a chunk's bytes from instead of the peer:
// the node's other folders. Called on the fetching folder's thread.
class ChunkFinder {
 public:
  virtual ~ChunkFinder() = default;
  // Whether some place is known to hold a chunk with this hash and length.
  virtual bool Has(const Chunk& chunk) = 0;
  // Reads that chunk's bytes into `out` (chunk.length of them); false
  // unless they were found and match the hash.
  virtual bool Read(const Chunk& chunk, std::span<char> out) = 0;
};

class FileProvider final : public Provider {
 public:
  // `store` is the replica's metadata store, read to map item ids to paths.
  static Result<std::unique_ptr<FileProvider>> Open(const std::string& root, MetadataStore& store,
                                                    FileProviderOptions options);
  ~FileProvider() override;

  std::string_view Name() const override { return kProviderName; }
  Status DetectChanges(ChangeRecorder& recorder) override;
  // A scope's places are directories, relative to the root. Uses the index
  // the last pass left (a full pass first if there is none), and turns into
  // a full pass where a scoped one cannot be sure: a place that vanished
  // (or is not known) without its parent being looked at, a place inside a
  // directory that moved.
  Status DetectChangesIn(ChangeRecorder& recorder, const ChangeScope& scope) override;
  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override;
  Result<std::unique_ptr<DataReader>> OpenData(const ItemMetadata& item,
                                               ChangeUnitId unit) override;
  Result<SaveResult> SaveChange(const SaveRequest& request) override;
  // One at a time, in order, as SaveChange; new files whose data is local
  // are first written to temporary files on every core
  // (PrepareNewFiles), which SaveChange then moves into place.
  void SaveChanges(std::span<const SaveRequest> requests,
                   std::vector<Result<SaveResult>>& results) override;
  Status CommitChanges() override;
  Result<std::string> MergeUnit(const ItemId& item, ChangeUnitId unit, std::string_view local,
                                std::string_view remote) override;
  Result<std::optional<NewItem>> KeepLosingValue(const ItemId& copy_id,
                                                 const LosingValue& loser) override;
  // Same kind and bytes (or link target), whatever the mtimes.
  bool Equivalent(ChangeUnitId unit, std::string_view a, std::string_view b) const override;
  bool IsFiltered() const override { return !options_.ignore.empty(); }
  bool Accepts(const ItemId& item, std::span<const UnitData> units) const override;

  // Loads the index of items from the store (DetectChanges does too).
  Status LoadItems() { return LoadIndex(); }

  struct Totals {
    uint64_t files = 0, directories = 0, symlinks = 0, bytes = 0;
  };
  Totals CountItems() const;

  // The item's path relative to the root, or nullopt if unknown here.
  std::optional<std::string> PathOf(const ItemId& id) const;

  // Problems met while detecting or applying ("PATH: reason"): unreadable
  // files and folders, unsupported entries. Cleared by DetectChanges.
  const std::vector<std::string>& problems() const { return problems_; }
  // What a dry run would do, or what was done, in order.
  const std::vector<FileAction>& actions() const { return actions_; }
  // Hands over the actions recorded so far and forgets them (a long-lived
  // provider, as in the daemon, would otherwise keep them all).
  std::vector<FileAction> TakeActions() { return std::exchange(actions_, {}); }
  const FileCounters& counters() const { return counters_; }

  const std::string& root() const { return root_; }
  bool dry_run() const { return options_.dry_run; }

  // Where fetches of files of 1 MiB or more look for chunks this folder
  // lacks before asking the replica the change came from; null for
  // nowhere. Not owned: it must outlive the SaveChange calls it is set for.
  void set_chunk_finder(ChunkFinder* finder) { chunk_finder_ = finder; }
  // This folder as a place to find chunks in, for another folder's fetches
  // (through a reader, see OpenFolderReader). Reads are checked against
  // the hash.
  bool HasChunk(const Chunk& chunk);
  bool ReadChunk(const Chunk& chunk, std::span<char> out);

 private:
  // The in-memory index of live items: enough to map ids to paths and to
  // compare a walk with the stat cache, without the chunk lists.
  // 128 bytes: the index holds one per entry of the folder.
  struct Node : FileStat {
    ItemId parent;
    std::string name;
    uint64_t digest = 0;  // of the content, to find files moved across devices
    ItemId id;
    uint32_t children = 0;
    uint8_t mark = 0;  // the current scan's: Walker::kUnseen, kClaimed, kAssumed
  };
  static_assert(sizeof(std::string) != 32 || sizeof(Node) == 128, "keep Node packed");
  class Walker;
  friend class Walker;

  FileProvider(std::string root, MetadataStore& store, FileProviderOptions options);

  Status LoadIndex();
  static Node NodeOf(const ItemId& parent, std::string name, const EntryState& state);
  void AddNode(const ItemId& id, Node node);
  void RemoveNode(const ItemId& id);
  void IndexKey(Node* node);
  Node* FindChildNode(const ItemId& parent, std::string_view name) const;
  std::optional<ItemId> FindChild(const ItemId& parent, std::string_view name) const;
  Result<int> OpenDirOf(const ItemId& dir);  // owned by the caller
  Result<int> OpenBeneath(const std::string& rel, int flags) const;
  Status EnsureParent(const ItemId& parent, int depth = 0);
  Result<SaveResult> Apply(const SaveRequest& request);
  Result<SaveResult> Delete(const ItemMetadata& local);
  // Where a new file goes: `name` in the folder it is made in; `rel` is its
  // path, for messages.
  struct FinalPlace {
    const std::string& name;
    const std::string& rel;
  };
  // Writes a file with `content` and names it `temp_name` in the
  // temporary folder. `near` is the folder it is going to, if open (see
  // NewFile in file_provider.cc).
  // With `place`, a file made unnamed in `near` is linked there as
  // `place->name` instead, and `temp_name` is left empty; kUnavailable if
  // that name is taken.
  Status WriteTemp(const EntryState& content, uint32_t mode, const DataOpener& open_data,
                   std::string& temp_name, int near = -1, const FinalPlace* place = nullptr);
  // What writing one temporary file did.
  struct TempWrite {
    FileCounters tally;        // its bytes_* counters
    bool no_tmpfile = false;   // O_TMPFILE, or naming through /proc, failed here
    bool name_failed = false;  // the file was written, but naming it failed (no /proc)
    bool placed = false;       // linked at its place (FinalPlace), not as a temporary file
  };
  // WriteTemp's work once its reader is open: `temp_name` is a fresh name,
  // replaced by the name of an interrupted transfer of the same content if
  // one is taken up. Reads the provider's state and changes none of it, so
  // files may be written on several threads at once (PrepareNewFiles); the
  // chunk index must be loaded for data from another replica.
  Status WriteTempFrom(const EntryState& content, uint32_t mode, DataReader& reader,
                       bool try_tmpfile, int near, std::string& temp_name, TempWrite& write,
                       const FinalPlace* place = nullptr) const;
  std::string NextTempName();
  // Writes the new files among `requests` (creations of files whose data is
  // a local file) to temporary files, several at once, into prepared_. Both
  // halves of the work are the kernel's, and two cores do them faster than
  // one: creating small files is mostly finding free inodes, copying large
  // ones is copying pages. A file that fails here is simply written again by
  // SaveChange.
  void PrepareNewFiles(std::span<const SaveRequest> requests);
  // Prepared temporary files by item, until SaveChanges ends.
  std::unordered_map<ItemId, std::string, Id128Hash> prepared_;
  // Writes `content` from a reader on another replica into `out`: chunks
  // already in `out` (an interrupted transfer) or in this folder's files are
  // taken from here, only the rest is read.
  Status FetchInto(const EntryState& content, DataReader& reader, int out, uint64_t have,
                   FileCounters& tally) const;
  Status LoadChunkIndex();
  // Adds a file's chunks to the chunk index, if it is loaded.
  void IndexChunks(const ItemId& id, const EntryState& state);
  struct LocalSource;
  struct ChunkPlace;
  // Where the chunk index says this folder has `chunk`, or null (it may be
  // stale: FetchInto checks).
  const ChunkPlace* FindLocalChunk(const Chunk& chunk) const;
  // The same, loading the indexes first if they are not (HasChunk).
  const ChunkPlace* FindChunkLoading(const Chunk& chunk);
  // Opens the file of `item` as `source`, and whether it is trusted.
  bool OpenSource(const ItemId& item, LocalSource& source) const;
  // For a trusted source: whether its stat is still the one it was opened with.
  static bool SourceUnchanged(const LocalSource& source);
  void SweepTemp(bool everything);
  Status MoveToTrash(int dir_fd, const std::string& name, const std::string& rel);
  Status CheckUnchanged(int dir_fd, const std::string& name, const EntryState& expected,
                        const std::string& rel) const;
  std::string TrashStamp();
  void Record(std::string verb, std::string path, std::string detail = {});

  std::string root_;
  MetadataStore& store_;
  FileProviderOptions options_;
  int root_fd_ = -1;
  int tmp_fd_ = -1;
  bool index_loaded_ = false;
  NodeTable<Node> nodes_;
  KeyIndex<Node> by_key_;  // hash of (parent, name) -> node
  std::unordered_multimap<uint64_t, Node*> key_overflow_;
  std::vector<ItemId> pending_rmdirs_;
  // Where each chunk of this folder's files was, keyed by the first 8 bytes
  // of its hash, for fetches to find bytes here; built when first needed,
  // dropped by each scan. Entries may be stale: reads are checked against
  // the hash, except where the file is a trusted source (below).
  struct ChunkPlace {
    ItemId item;
    uint64_t offset = 0;
    uint64_t check = 0;  // bytes 8-15 of the hash (the key is bytes 0-7)
    uint32_t length = 0;
    uint32_t generation = 0;  // the item's indexing it came from
  };
  std::unordered_map<uint64_t, ChunkPlace> chunk_index_;
  // Large files (kTrustedSourceBytes or more) whose chunks were indexed from
  // a state with a settled stat (not racy), by item, with the generation of
  // that indexing: while the file's stat still matches that state, so do
  // its bytes (the premise of the stat cache), and a place of that
  // generation is copied in the kernel without being read and hashed.
  struct TrustedSource {
    uint32_t generation = 0;
    FileStat stat;
  };
  std::unordered_map<ItemId, TrustedSource, Id128Hash> trusted_sources_;
  uint32_t index_generation_ = 0;
  bool chunk_index_loaded_ = false;
  ChunkFinder* chunk_finder_ = nullptr;
  bool wrote_ = false;
  uint64_t temp_counter_ = 0;
  bool tmpfile_works_ = true;  // O_TMPFILE and /proc, until either fails (WriteTemp)
  std::string pid_;            // in temporary names
  std::string trash_stamp_;
  std::vector<std::string> problems_;
  std::vector<FileAction> actions_;
  FileCounters counters_;
};

}  // namespace meshsync::files

#endif  // MESHSYNC_PROVIDERS_FILES_FILE_PROVIDER_H_
