// The SQLite metadata store: one database file per replica, WAL mode.
//
// Schema (version 2, recorded in PRAGMA user_version):
//   meta(name PRIMARY KEY, value)   replica id, provider, key map, tick,
//                                   knowledge, forgotten knowledge
//   items(id PRIMARY KEY, key, versions)  WITHOUT ROWID, so rows are stored
//                                   in item-id order and scans are sequential
//   conflicts(id INTEGER PRIMARY KEY, record)
//   changes(seq INTEGER PRIMARY KEY, id)  the change log: every upsert, in
//                                   commit order (version 2)
//   checkpoints(seq INTEGER PRIMARY KEY, knowledge)  the store's knowledge
//                                   after recent commits, and the last
//                                   change logged by then (version 2)
//
// The change log lets a session's source read only what changed since the
// destination last caught up, instead of every item (ScanChanges). Every
// item a commit writes is known by the knowledge that commit leaves (a
// replica knows every version it holds), and knowledge only grows, so after
// checkpoint (S, K) every item whose last logged change is at or before S
// (or was never logged: written before version 2) holds versions in K. A
// peer whose knowledge contains K lacks only items logged after S. The
// store checks both premises as it commits; should one ever fail, it turns
// the log off for good and scans every item, as version 1 did. Checkpoints
// with the same knowledge are merged, the last kMaxCheckpoints are kept and
// the log is pruned up to the oldest (at most kMaxLogged changes).
//
// Durability: WAL with synchronous=FULL: a commit is on the device before
// Commit returns, even across a power cut. A provider may rely on that: the
// SQL provider moves its anchors in the user's database once the metadata
// that describes the rows is committed, and a commit lost after that would
// lose the changes it recorded.
//
// StoreDurability::kOwnVersions (a folder synced without --fsync): only a
// commit that must survive a power cut (MayBeUndoneByPowerCut) syncs; the
// others are written with synchronous=NORMAL. That alone does not keep a
// session from waiting for the device, which matters after a large file was
// written around the page cache, when a sync waits for all of it to reach
// the disk (120 ms for 256 MiB here; W3 in bench/README.md). Two more
// things sync, and the store keeps them off the session's path:
// - Starting the log over. A commit that finds the whole log copied to the
//   database writes over it from the start, and SQLite syncs the log's new
//   header first (else a power cut could replay old frames over newer
//   pages). A read transaction on the log (LogPin, a connection of its own)
//   keeps a commit from starting it over; it moves to each new commit, so
//   checkpoints still copy everything. The log starts over at a durable
//   commit, which syncs anyway, or once it holds kMaxPinnedPages.
// - Checkpoints (below). What the last run left in the log is copied as the
//   store opens, while the device is idle, and later checkpoints start when
//   kCheckpointPages pages were added since the last one, not whenever the
//   log (which no longer starts over) is that long.
//
// Background commits: CommitInBackground plans the batch (encodes its rows,
// the change log's entries and checkpoints) on the caller's thread, adopts
// the state it leaves, and hands the plan to a thread of its own, which
// writes it through a second connection while the caller goes on reading
// (the session reads and applies the next window while the last one's
// metadata is written: the two stores' commits were a third of an initial
// sync). Until the plan is written, reads lay it over what they find
// stored (the reading connection's snapshot may predate it). At most one
// plan is in flight; the next commit, Flush, and the reads that must see
// everything on disk (a change scan, whose results go to a peer; a visit;
// counts; conflicts) wait for it. A plan that fails leaves the store
// failed: its state in memory is ahead of the file.
//
// Lookups that find nothing: a new replica's first detection looks up the
// id and then the key of every row or file it finds, and finds none, at a
// query each (a fifth of an initial database sync). A store that was empty
// when it opened holds only what it has been given since (it is its file's
// only writer), so it keeps a fingerprint of every id and key it is given
// (FingerprintSet, 16 bytes an entry) and answers a lookup whose
// fingerprint it lacks without a query. Past kMaxKnown fingerprints it
// drops the set and queries every lookup again.
//
// Checkpoints (copying the log back into the database, and syncing it) run
// on a thread of their own, with a connection of their own, once a commit
// leaves kCheckpointPages pages in the log: a checkpoint does not block the
// writer, so a commit no longer waits for the copy of what earlier commits
// wrote (an incremental sync of 1,000 table rows after a large one spent
// 30 of its 150 ms there). Should the log still reach kInlineCheckpointPages
// (the thread cannot keep up, or cannot open the database), the next commit
// first checkpoints on the caller's thread, so the log stays bounded either
// way (see BeginRead for how reads made while batches are written in the
// background let the log start over). Closing
// stops a checkpoint under way and starts none: what is left is copied after
// the next run's first commit, alongside that run's work.
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "meshsync/metadata_store.h"
#include "src/store/fingerprint_set.h"
#include "src/store/item_codec.h"

namespace meshsync {
namespace {

constexpr int kSchemaVersion = 2;
// Pages in the write-ahead log that start a background checkpoint (SQLite's
// own automatic checkpoint starts at 1,000), and that make the committing
// thread checkpoint itself.
constexpr int kCheckpointPages = 1000;
constexpr int kInlineCheckpointPages = 8 * kCheckpointPages;
// StoreDurability::kOwnVersions: past this, the log may start over.
constexpr int kMaxPinnedPages = 4 * kCheckpointPages;
constexpr off_t kLogHeaderBytes = 32;  // a log this long holds no pages
// A frame of the log: a page (4 KiB in stores made now) and its header.
constexpr off_t kLogFrameBytes = 4096 + 24;
// Fingerprints an empty store keeps of what it is given (known_): 16 MiB at
// most, enough for the ids and keys of 500,000 items.
constexpr size_t kMaxKnown = size_t{1} << 20;
constexpr size_t kMaxCheckpoints = 64;
constexpr int64_t kMaxLogged = 1 << 20;

// Debian builds SQLite without lookaside memory and with allocation
// statistics on, so every allocation SQLite makes takes a process-wide
// mutex to count it. Nothing in meshsync reads the statistics (they serve
// sqlite3_memory_used and the soft heap limit): they are turned off before
// SQLite initialises, for every connection in the process, the stores' and
// the SQL provider's alike. sqlite3_config fails harmlessly if SQLite was
// initialised first.
[[maybe_unused]] const bool kSqliteConfigured = [] {
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  return true;
}();

// Each step brings the schema from version (index) to version (index + 1).
constexpr const char* kMigrations[] = {
    R"sql(
      CREATE TABLE meta(name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
      CREATE TABLE items(id BLOB PRIMARY KEY, key BLOB, versions BLOB NOT NULL) WITHOUT ROWID;
      CREATE INDEX items_by_key ON items(key) WHERE key IS NOT NULL;
      CREATE TABLE conflicts(id INTEGER PRIMARY KEY, record BLOB NOT NULL);
    )sql",
    R"sql(
      CREATE TABLE changes(seq INTEGER PRIMARY KEY, id BLOB NOT NULL);
      CREATE TABLE checkpoints(seq INTEGER PRIMARY KEY, knowledge BLOB NOT NULL);
    )sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

Status SqliteError(sqlite3* db, int rc, std::string_view doing) {
  std::string message(doing);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return UnavailableError(std::move(message));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return DataLossError(std::move(message));
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_FULL:
    case SQLITE_IOERR:
      return UnavailableError(std::move(message));
    default:
      return InternalError(std::move(message));
  }
}

// A prepared statement, reset after every use.
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Status Prepare(sqlite3* db, const char* sql) {
    db_ = db;
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db, rc, "preparing statement");
    return Status::Ok();
  }

  void BindId(int index, const Id128& id) {
    id.ToBytes(id_buffers_[index % 2]);
    sqlite3_bind_blob(stmt_, index, id_buffers_[index % 2], 16, SQLITE_STATIC);
  }
  // Bound without a copy (an allocation and a copy per value, two per item
  // written): the bytes must outlive the statement's run, which Finish ends
  // by clearing the bindings.
  void BindBlob(int index, std::string_view bytes) {
    sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
  }
  void BindText(int index, std::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
  }
  void BindNull(int index) { sqlite3_bind_null(stmt_, index); }
  void BindInt(int index, int64_t value) { sqlite3_bind_int64(stmt_, index, value); }

  // True while a row is available; errors end the iteration and are kept.
  bool Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) error_ = SqliteError(db_, rc, "executing statement");
    return false;
  }
  // Runs a statement that returns no rows.
  Status Run() {
    while (Step()) {
    }
    return Finish();
  }
  Status Finish() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    Status status = error_;
    error_ = Status::Ok();
    return status;
  }

  std::string_view Blob(int column) const {
    const void* data = sqlite3_column_blob(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);
    if (data == nullptr) return {};
    return std::string_view(static_cast<const char*>(data), static_cast<size_t>(size));
  }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  bool IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  uint8_t id_buffers_[2][16];  // bound ids must outlive the step
  Status error_;
};

// Copies a store's write-ahead log back into its database on a thread of
// its own (see the file comment). The thread starts at the first request.
class Checkpointer {
 public:
  explicit Checkpointer(std::string path) : path_(std::move(path)) {}
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;
  // Stops a checkpoint under way (SQLite's checkpoints may stop anywhere;
  // the next one copies what this one had not) and starts no other.
  ~Checkpointer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      if (running_ != nullptr) sqlite3_interrupt(running_);
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  // Asks for a checkpoint; requests made while one runs are merged into the
  // next. False if the thread cannot run (then the caller checkpoints).
  bool Request() {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return false;
    if (!thread_.joinable()) {
      try {
        thread_ = std::thread([this] { Run(); });
      } catch (const std::system_error&) {
        broken_ = true;
        return false;
      }
    }
    requested_ = true;
    wake_.notify_one();
    return true;
  }

  // Waits for a checkpoint under way to end, and holds the next one back
  // until Resume: the caller checkpoints meanwhile (two checkpoints cannot
  // run at once, and one that starts while commits go on never catches up
  // with them).
  void Pause() {
    std::unique_lock<std::mutex> lock(mu_);
    paused_ = true;
    idle_.wait(lock, [this] { return running_ == nullptr; });
  }
  void Resume() {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = false;
    wake_.notify_one();
  }

  // Whether the last checkpoint left part of the log uncopied (a reader's
  // snapshot held it back), and how many have copied all of it.
  bool behind() const { return behind_.load(std::memory_order_relaxed); }
  uint64_t caught_up() const { return caught_up_.load(std::memory_order_relaxed); }

  // Of a log that holds `pages` pages, how many no checkpoint has copied
  // yet, as far as the last one tells: all of them if the log has started
  // over since (it is shorter than the log that checkpoint saw).
  int Uncopied(int pages) {
    std::lock_guard<std::mutex> lock(mu_);
    return pages >= last_log_ ? pages - last_copied_ : pages;
  }

  // Called at every commit. AllCopied: a checkpoint that started after the
  // last commit of this connection copied all of the log.
  void Committed() { commits_.fetch_add(1); }
  bool AllCopied() const {
    uint64_t commits = commits_.load();
    return commits > 0 && copied_through_.load() == commits;
  }

 private:
  void Run() {
    sqlite3* db = nullptr;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [this] { return (requested_ && !paused_) || stopping_; });
        if (stopping_) break;
        requested_ = false;
      }
      if (db == nullptr && !OpenConnection(db)) {
        std::lock_guard<std::mutex> lock(mu_);
        broken_ = true;
        break;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) break;
        if (paused_) continue;  // asked for again after Resume
        running_ = db;
      }
      // PASSIVE: copies what no reader still needs, never waits for one.
      // Busy, failed or interrupted, it is tried again at the next request,
      // and the committing thread checkpoints itself if the log grows too
      // long.
      int log = 0;
      int copied = 0;
      uint64_t commits = commits_.load();
      int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
      bool behind = rc != SQLITE_OK || copied < log;
      behind_.store(behind);
      if (rc == SQLITE_OK) {
        std::lock_guard<std::mutex> lock(mu_);
        last_log_ = log;
        last_copied_ = copied;
      }
      if (!behind) {
        caught_up_.fetch_add(1);
        copied_through_.store(commits);
      }
      std::lock_guard<std::mutex> lock(mu_);
      running_ = nullptr;
      idle_.notify_all();
    }
    if (db != nullptr) sqlite3_close(db);
  }

  bool OpenConnection(sqlite3*& db) {
    if (sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
            SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      db = nullptr;
      return false;
    }
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    // Its own automatic checkpoints would be redundant: it writes nothing.
    sqlite3_wal_autocheckpoint(db, 0);
    return true;
  }

  const std::string path_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;  // running_ went back to nullptr
  bool requested_ = false;
  bool paused_ = false;
  bool stopping_ = false;
  bool broken_ = false;
  sqlite3* running_ = nullptr;  // the connection, while it checkpoints
  std::atomic<bool> behind_{false};
  int last_log_ = 0;     // the log's pages at the last checkpoint
  int last_copied_ = 0;  // the pages that checkpoint had copied
  std::atomic<uint64_t> caught_up_{0};
  std::atomic<uint64_t> commits_{0};         // commits seen (Committed)
  std::atomic<uint64_t> copied_through_{0};  // commits_ when the last full copy began
  std::thread thread_;
};

// Runs one task at a time on a thread of its own, started with the first
// task: the store's background commits (see the file comment).
class Worker {
 public:
  Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  // Finishes the task under way first.
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  // Whether tasks run on a thread of the worker's own (one is started
  // here if need be); if not, Start runs them on the caller's.
  bool Threaded() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable() && !broken_) {
      try {
        thread_ = std::thread([this] { Run(); });
      } catch (const std::system_error&) {
        broken_ = true;
      }
    }
    return !broken_;
  }

  // Starts `task`, or runs it here if no thread can start.
  // REQUIRES: no task is under way (Wait returned since the last Start).
  void Start(std::function<Status()> task) {
    bool threaded = Threaded();
    std::unique_lock<std::mutex> lock(mu_);
    if (!threaded) {
      lock.unlock();
      Status result = task();
      lock.lock();
      result_ = std::move(result);
      finished_.fetch_add(1);
      return;
    }
    task_ = std::move(task);
    busy_ = true;
    wake_.notify_one();
  }

  // Waits for the task started last to end; what it returned.
  Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return !busy_; });
    Status result = std::move(result_);
    result_ = Status::Ok();
    return result;
  }

  // Tasks ended so far.
  uint64_t finished() const { return finished_.load(std::memory_order_relaxed); }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      wake_.wait(lock, [this] { return busy_ || stopping_; });
      if (!busy_) return;  // stopping, with nothing left to do
      std::function<Status()> task = std::move(task_);
      lock.unlock();
      Status result = task();
      lock.lock();
      result_ = std::move(result);
      busy_ = false;
      finished_.fetch_add(1);
      done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::function<Status()> task_;
  Status result_;
  bool busy_ = false;
  bool stopping_ = false;
  bool broken_ = false;
  std::atomic<uint64_t> finished_{0};
  std::thread thread_;
};

// A read transaction on a store's log, on a connection of its own, which
// keeps commits from starting the log over (see the file comment). SQLite
// starts it over only if no reader uses it, and a reader uses it if, when
// its transaction began, the log held pages not yet copied to the
// database. So the pin moves right after each commit, to a new transaction
// begun before the old one ends (two connections take turns): a checkpoint
// may then copy everything committed, yet the log is never free of
// readers. Not thread-safe: the committing thread moves it.
class LogPin {
 public:
  LogPin() = default;
  LogPin(const LogPin&) = delete;
  LogPin& operator=(const LogPin&) = delete;
  ~LogPin() {
    Release();
    for (sqlite3* db : dbs_) sqlite3_close(db);
  }

  bool Open(const std::string& path) {
    for (sqlite3*& db : dbs_) {
      if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
          SQLITE_OK) {
        return false;
      }
      sqlite3_busy_timeout(db, 1'000);
      sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    }
    return true;
  }

  // Pins the log as it is now. Should the new transaction fail to begin,
  // the log is left free (a commit may then start it over and sync).
  void Hold() {
    int next = held_ == 0 ? 1 : 0;
    bool begun = Begin(dbs_[next]);
    Release();
    if (begun) held_ = next;
  }
  void Release() {
    if (held_ < 0) return;
    sqlite3_exec(dbs_[held_], "COMMIT", nullptr, nullptr, nullptr);
    held_ = -1;
  }

 private:
  static bool Begin(sqlite3* db) {
    if (sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
    // The transaction takes its snapshot, and its hold on the log, at its
    // first read.
    if (sqlite3_exec(db, "SELECT 1 FROM sqlite_schema LIMIT 1", nullptr, nullptr, nullptr) !=
        SQLITE_OK) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return false;
    }
    return true;
  }

  sqlite3* dbs_[2] = {nullptr, nullptr};
  int held_ = -1;  // the connection whose transaction pins the log
};

class SqliteStore final : public MetadataStore {
 public:
  // A batch still being written is finished first (but no one hears if it
  // fails: a caller that cares calls Flush).
  ~SqliteStore() override {
    if (staged_) AbandonStaged();  // its commit would wait for ever
    worker_.reset();
    closing_ = true;
    EndRead();
    // Statements must be finalized before the connection closes.
    get_item_.reset();
    find_by_key_.reset();
    scan_.reset();
    visit_.reset();
    replace_item_.reset();
    put_item_.reset();
    erase_.reset();
    set_meta_.reset();
    add_conflict_.reset();
    drop_conflict_.reset();
    log_change_.reset();
    count_changes_.reset();
    changed_ids_.reset();
    put_checkpoint_.reset();
    drop_checkpoint_.reset();
    prune_checkpoints_.reset();
    prune_changes_.reset();
    db_bytes_.reset();
    if (checkpointer_ != nullptr && checkpointer_->AllCopied() && failed_.ok() &&
        durability_ == StoreDurability::kEveryCommit) {
      // All of the log is in the database already: emptied, it is nothing
      // for the next open to read back (SQLite rebuilds its index of the
      // log from the whole file when a process opens the store first). Not
      // if anyone still reads it: then the next open reads it back.
      checkpointer_.reset();
      sqlite3_busy_timeout(db_, 0);
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    }
    checkpointer_.reset();  // before the connections: it may be checkpointing
    pin_.reset();
    if (writer_ != nullptr && writer_ != db_) sqlite3_close(writer_);
    if (db_ != nullptr) sqlite3_close(db_);
  }

  static Result<std::unique_ptr<MetadataStore>> Open(const std::string& path,
                                                     std::string_view provider_name, Random& random,
                                                     StoreDurability durability) {
    auto store = std::unique_ptr<SqliteStore>(new SqliteStore());
    store->durability_ = durability;
    MESHSYNC_RETURN_IF_ERROR(store->Init(path, provider_name, random));
    return std::unique_ptr<MetadataStore>(std::move(store));
  }

  static Result<std::unique_ptr<MetadataStore>> OpenSnapshot(const std::string& path,
                                                             std::string_view provider_name) {
    auto store = std::unique_ptr<SqliteStore>(new SqliteStore());
    store->snapshot_ = true;
    MESHSYNC_RETURN_IF_ERROR(store->InitSnapshot(path, provider_name));
    return std::unique_ptr<MetadataStore>(std::move(store));
  }

  const ReplicaState& state() const override { return state_; }

  Result<std::optional<ItemMetadata>> GetItem(const ItemId& id) override {
    MESHSYNC_RETURN_IF_ERROR(failed_);
    if (known_ && !known_->Contains(store::FingerprintSet::Of(id)))
      return std::optional<ItemMetadata>();
    if (const Pending* pending = FindPending(id); pending != nullptr) return ReadPending(*pending);
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    get_item_->BindId(1, id);
    return ReadOptionalItem(*get_item_);
  }

  Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) override {
    MESHSYNC_RETURN_IF_ERROR(failed_);
    if (known_ && !known_->Contains(store::FingerprintSet::Of(key)))
      return std::optional<ItemMetadata>();
    IndexPendingKeys();
    auto by_key = std::lower_bound(
        pending_keys_.begin(), pending_keys_.end(), key,
        [this](uint32_t i, std::string_view k) { return PendingKey(pending_[i]) < k; });
    if (by_key != pending_keys_.end() && PendingKey(pending_[*by_key]) == key)
      return ReadPending(pending_[*by_key]);
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    find_by_key_->BindBlob(1, key);
    MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> stored, ReadOptionalItem(*find_by_key_));
    // The batch being written moved the item to another key, or erased it.
    if (stored.has_value() && FindPending(stored->id) != nullptr) stored.reset();
    return stored;
  }

  // What is stored, with the batch being written laid over it. The scan's
  // snapshot is not kept for later reads, as a lookup's is (BeginRead): a
  // session's destination scans a window, then applies it without reading,
  // and a snapshot held meanwhile would hold back checkpoints.
  Status ScanItems(const ItemId& first, const ItemId& last, size_t limit,
                   std::vector<ItemMetadata>& out) override {
    Status status = ScanMerged(first, last, limit, out);
    if (!visiting_) EndRead();  // a visit's statement still reads in it
    return status;
  }

  Status ScanMerged(const ItemId& first, const ItemId& last, size_t limit,
                    std::vector<ItemMetadata>& out) {
    MESHSYNC_RETURN_IF_ERROR(failed_);
    auto pending = LowerBoundPending(first);
    if (pending == pending_.end() || last < pending->id) return ScanStored(first, last, limit, out);
    std::vector<ItemMetadata> stored;
    ItemId from = first;
    size_t found = 0;
    while (found < limit) {
      stored.clear();
      const size_t wanted = limit - found;
      MESHSYNC_RETURN_IF_ERROR(ScanStored(from, last, wanted, stored));
      // Every stored item from `from` through `through` is in `stored`.
      const ItemId through = stored.size() < wanted ? last : stored.back().id;
      size_t next = 0;
      while (found < limit) {
        bool pending_next = pending != pending_.end() && !(through < pending->id) &&
                            (next == stored.size() || !(stored[next].id < pending->id));
        if (pending_next) {
          if (next < stored.size() && stored[next].id == pending->id) ++next;  // superseded
          if (pending->item >= 0) {
            MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> item, ReadPending(*pending));
            out.push_back(std::move(*item));
            ++found;
          }
          ++pending;
        } else if (next < stored.size()) {
          out.push_back(std::move(stored[next++]));
          ++found;
        } else {
          break;
        }
      }
      if (through == last) break;
      from = through.Next();
    }
    return Status::Ok();
  }

  Status ScanStored(const ItemId& first, const ItemId& last, size_t limit,
                    std::vector<ItemMetadata>& out) {
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    scan_->BindId(1, first);
    scan_->BindId(2, last);
    scan_->BindInt(3, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
    while (scan_->Step()) {
      out.emplace_back();
      Status status = ReadItem(*scan_, out.back());
      if (!status.ok()) {
        scan_->Finish().IgnoreError();
        return status;
      }
    }
    return scan_->Finish();
  }

  Status VisitItems(const ItemId& first, const ItemId& last,
                    const std::function<bool(ItemMetadata&)>& visit) override {
    // One statement for the whole range; a visit inside a visit (the
    // statement is busy) takes the default's way.
    if (visiting_) return MetadataStore::VisitItems(first, last, visit);
    MESHSYNC_RETURN_IF_ERROR(Drain());
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    visiting_ = true;
    visit_->BindId(1, first);
    visit_->BindId(2, last);
    ItemMetadata item;
    Status status;
    while (visit_->Step()) {
      status = ReadItem(*visit_, item);
      if (!status.ok() || !visit(item)) break;
    }
    Status finished = visit_->Finish();
    visiting_ = false;
    MESHSYNC_RETURN_IF_ERROR(status);
    return finished;
  }

  // Reads only the items logged since the newest checkpoint that `known`
  // contains, when there are few enough of them that looking each up beats
  // reading every item (see the file comment).
  // The batch being written in the background is laid over what is logged
  // and stored, as for a lookup; a caller that hands the items to a peer
  // flushes first (see MetadataStore::ScanChanges).
  Status ScanChanges(const ItemId& first, const Knowledge& known, size_t limit,
                     std::vector<ItemMetadata>& out, ChangeScan& scan) override {
    MESHSYNC_RETURN_IF_ERROR(failed_);
    std::optional<int64_t> since;
    for (auto it = checkpoints_.rbegin(); it != checkpoints_.rend(); ++it) {
      if (known.Contains(it->knowledge)) {
        since = it->seq;
        break;
      }
    }
    if (!since.has_value()) return MetadataStore::ScanChanges(first, known, limit, out, scan);
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    count_changes_->BindInt(1, *since);
    int64_t logged = count_changes_->Step() ? count_changes_->Int(0) : 0;
    MESHSYNC_RETURN_IF_ERROR(count_changes_->Finish());
    logged += static_cast<int64_t>(pending_.size());
    int64_t bytes = db_bytes_->Step() ? db_bytes_->Int(0) : 0;
    MESHSYNC_RETURN_IF_ERROR(db_bytes_->Finish());
    if (logged > std::max(kMinIndexed, bytes / kBytesPerLookup))
      return MetadataStore::ScanChanges(first, known, limit, out, scan);

    std::vector<ItemId> ids;
    ids.reserve(static_cast<size_t>(logged));
    changed_ids_->BindInt(1, *since);
    while (changed_ids_->Step()) {
      std::string_view id = changed_ids_->Blob(0);
      if (id.size() != 16) {
        changed_ids_->Finish().IgnoreError();
        return DataLossError("corrupt item id in the metadata store's change log");
      }
      ItemId item(Id128::FromBytes(reinterpret_cast<const uint8_t*>(id.data())));
      if (!(item < first)) ids.push_back(item);
    }
    MESHSYNC_RETURN_IF_ERROR(changed_ids_->Finish());
    // Every item the batch in flight writes is logged by it.
    for (const Pending& pending : pending_) {
      if (pending.item >= 0 && !(pending.id < first)) ids.push_back(pending.id);
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());

    scan = ChangeScan{};
    scan.indexed = true;
    const size_t wanted = out.size() + std::max<size_t>(limit, 1);
    for (const ItemId& id : ids) {
      std::optional<ItemMetadata> item;
      if (const Pending* pending = FindPending(id); pending != nullptr) {
        MESHSYNC_ASSIGN_OR_RETURN(item, ReadPending(*pending));
      } else {
        get_item_->BindId(1, id);
        MESHSYNC_ASSIGN_OR_RETURN(item, ReadOptionalItem(*get_item_));
      }
      ++scan.examined;
      scan.through = id;
      if (!item.has_value() || KnowsAllOf(known, *item)) continue;  // erased, or known
      out.push_back(std::move(*item));
      if (out.size() == wanted) return Status::Ok();
    }
    scan.through = ItemId::Max();
    return Status::Ok();
  }

  Result<size_t> CountItems() override {
    MESHSYNC_RETURN_IF_ERROR(Drain());
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    Statement count;
    MESHSYNC_RETURN_IF_ERROR(count.Prepare(db_, "SELECT count(*) FROM items"));
    size_t n = count.Step() ? static_cast<size_t>(count.Int(0)) : 0;
    MESHSYNC_RETURN_IF_ERROR(count.Finish());
    return n;
  }

  Result<std::vector<ConflictRecord>> ListConflicts() override {
    MESHSYNC_RETURN_IF_ERROR(Drain());
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    Statement list;
    MESHSYNC_RETURN_IF_ERROR(list.Prepare(db_, "SELECT id, record FROM conflicts ORDER BY id"));
    std::vector<ConflictRecord> out;
    while (list.Step()) {
      ConflictRecord record;
      MESHSYNC_RETURN_IF_ERROR(store::DecodeConflict(list.Blob(1), record));
      record.id = static_cast<uint64_t>(list.Int(0));
      out.push_back(std::move(record));
    }
    MESHSYNC_RETURN_IF_ERROR(list.Finish());
    return out;
  }

  Status Commit(const StoreBatch& batch) override { return Write(batch, Mode::kForeground); }
  Status CommitInBackground(const StoreBatch& batch) override {
    return Write(batch, Mode::kBackground);
  }
  Status Flush() override { return Drain(); }

  // The worker writes the batch in a transaction and waits at its COMMIT
  // for ReleaseStaged (Apply). Without a thread to write on, the plan is
  // kept, and written and committed by ReleaseStaged. Either way, reads see
  // the batch at once (ShowsStaged).
  Status StageInBackground(const StoreBatch& batch) override {
    if (staged_) return FailedPreconditionError("a staged metadata batch awaits release");
    return Write(batch, Mode::kStaged);
  }
  Status ReleaseStaged() override {
    if (!staged_) return failed_;
    staged_ = false;
    if (staged_unwritten_) {
      staged_unwritten_ = false;
      EndRead();  // the writer may be the reading connection (no threads)
      Status written = Apply(*plan_, false);
      Drain().IgnoreError();  // reads see what is stored from here on
      // The state in memory already includes the batch: the store is failed.
      if (!written.ok() && failed_.ok()) failed_ = std::move(written);
      return failed_;
    }
    OpenGate(Gate::kRelease);
    return Status::Ok();
  }
  void AbandonStaged() override {
    if (!staged_) return;
    staged_ = false;
    if (!staged_unwritten_) OpenGate(Gate::kAbandon);
    staged_unwritten_ = false;
    // The state in memory already includes the batch: the store is failed.
    Drain().IgnoreError();
    if (failed_.ok()) failed_ = AbortedError("a staged metadata batch was abandoned");
  }
  bool ShowsStaged() const override { return true; }

 private:
  // An indexed ScanChanges looks up at most one logged change per this many
  // bytes of the store, or kMinIndexed changes in a small one; above that,
  // reading every item in order costs less.
  static constexpr int64_t kBytesPerLookup = 2048;
  static constexpr int64_t kMinIndexed = 64;

  struct Checkpoint {
    int64_t seq = 0;  // the last change logged when the store knew `knowledge`
    Knowledge knowledge;
    std::string encoded;
  };
  // The change log's state, as a commit changes it.
  struct ChangeLog {
    std::vector<Checkpoint> checkpoints;  // oldest first
    int64_t last_seq = 0;                 // the last change logged
    bool off = false;                     // turned off for good (see the file comment)
  };

  // A commit's writes, planned on the caller's thread and carried out by
  // Apply, in this order, in one transaction on writer_.
  struct PlannedItem {
    ItemId id;
    std::string key;  // empty: NULL
    std::string versions;
  };
  struct Plan {
    std::vector<ItemId> erasures;
    std::vector<PlannedItem> items;
    int64_t first_seq = 0;  // logged as first_seq, first_seq + 1, ...; 0: not logged
    std::vector<uint64_t> resolved_conflicts;
    std::vector<std::string> new_conflicts;  // encoded
    std::vector<std::pair<const char*, std::string>> meta;
    bool log_off = false;  // the log is emptied and turned off for good
    std::optional<int64_t> drop_checkpoint;
    std::optional<std::pair<int64_t, std::string>> put_checkpoint;
    std::optional<int64_t> prune_before;  // checkpoints and changes before this seq
    bool durable = true;                  // synced (see StoreDurability)
  };
  // An item of the batch being written in the background (plan_), in id
  // order: plan_->items[item], or erased if item < 0.
  struct Pending {
    ItemId id;
    int32_t item;
  };

  SqliteStore() = default;

  enum class Mode { kForeground, kBackground, kStaged };
  Status Write(const StoreBatch& batch, Mode mode) {
    if (batch.empty()) return failed_;
    if (snapshot_) return FailedPreconditionError("a metadata snapshot is read-only");
    if (visiting_) return FailedPreconditionError("the metadata store is being read (VisitItems)");
    MESHSYNC_RETURN_IF_ERROR(Drain());
    EndRead();  // the next read sees this batch (or, while it is written, plan_)
    if (checkpointer_ != nullptr && log_pages_.load() >= kInlineCheckpointPages) {
      // The background checkpoints fell behind (or a snapshot kept the log
      // from starting over). With no snapshot held and no write under way,
      // this copies all of the log, and the next commit starts it over.
      checkpointer_->Pause();
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      checkpointer_->Resume();
      log_pages_.store(0);
    }
    ChangeLog log{checkpoints_, last_seq_, log_off_};
    auto plan = std::make_unique<Plan>();
    PlanBatch(batch, log, *plan);
    plan->durable =
        durability_ == StoreDurability::kEveryCommit || !MayBeUndoneByPowerCut(state_, batch);
    Know(*plan);
    if (worker_ == nullptr && writer_ != db_) worker_ = std::make_unique<Worker>();
    bool threaded = worker_ != nullptr && mode != Mode::kForeground && worker_->Threaded();
    if (!threaded && mode != Mode::kStaged) {
      // The in-memory copy changes only once the transaction is durable.
      MESHSYNC_RETURN_IF_ERROR(Apply(*plan, false));
      Adopt(batch, std::move(log));
      return Status::Ok();
    }
    // Reads see the batch from here on: what they find stored, with plan_
    // laid over it, until Drain.
    Adopt(batch, std::move(log));
    plan_ = std::move(plan);
    IndexPending();
    const bool staged = mode == Mode::kStaged;
    staged_ = staged;
    if (!threaded) {  // staged: ReleaseStaged writes it
      staged_unwritten_ = true;
      return Status::Ok();
    }
    if (staged) {
      std::lock_guard<std::mutex> lock(gate_mu_);
      gate_ = Gate::kHeld;
    }
    worker_->Start([this, plan = plan_.get(), staged] { return Apply(*plan, staged); });
    writing_ = true;
    return Status::Ok();
  }

  enum class Gate { kHeld, kRelease, kAbandon };
  void OpenGate(Gate gate) {
    {
      std::lock_guard<std::mutex> lock(gate_mu_);
      gate_ = gate;
    }
    gate_open_.notify_all();
  }

  // Waits for the batch being written in the background; after that, reads
  // see everything committed in what is stored. A failure stays.
  Status Drain() {
    if (staged_) return FailedPreconditionError("a staged metadata batch awaits release");
    if (writing_) {
      writing_ = false;
      Status written = worker_->Wait();
      if (!written.ok()) failed_ = std::move(written);
    }
    if (plan_ != nullptr) {
      EndRead();  // the next read sees what the batch wrote
      pending_.clear();
      pending_keys_.clear();
      pending_keys_indexed_ = false;
      plan_.reset();
    }
    return failed_;
  }

  // Adds what `plan` writes to known_, before any read may look for it (a
  // batch abandoned after this leaves fingerprints of items never written,
  // which only cost those lookups a query).
  void Know(const Plan& plan) {
    if (!known_) return;
    for (const PlannedItem& item : plan.items) {
      if (!known_->Add(store::FingerprintSet::Of(item.id)) ||
          (!item.key.empty() && !known_->Add(store::FingerprintSet::Of(item.key)))) {
        known_.reset();  // too many to keep: every lookup queries again
        return;
      }
    }
  }

  void Adopt(const StoreBatch& batch, ChangeLog log) {
    if (batch.keys) state_.keys = *batch.keys;
    if (batch.tick) state_.tick = std::max(state_.tick, *batch.tick);
    if (batch.knowledge) state_.knowledge = *batch.knowledge;
    if (batch.forgotten) state_.forgotten = *batch.forgotten;
    checkpoints_ = std::move(log.checkpoints);
    last_seq_ = log.last_seq;
    log_off_ = log.off;
  }

  void IndexPending() {
    pending_.reserve(plan_->erasures.size() + plan_->items.size());
    for (const ItemId& id : plan_->erasures) pending_.push_back(Pending{id, -1});
    for (size_t i = 0; i < plan_->items.size(); ++i)
      pending_.push_back(Pending{plan_->items[i].id, static_cast<int32_t>(i)});
    // The last write of an id is the one that stays (erasures go first).
    // Batches mostly come in id order already (Recorder, a session's window).
    auto by_id = [](const Pending& a, const Pending& b) { return a.id < b.id; };
    if (!std::is_sorted(pending_.begin(), pending_.end(), by_id))
      std::stable_sort(pending_.begin(), pending_.end(), by_id);
    size_t kept = 0;
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (kept > 0 && pending_[kept - 1].id == pending_[i].id) {
        pending_[kept - 1] = pending_[i];
      } else {
        pending_[kept++] = pending_[i];
      }
    }
    pending_.resize(kept);
  }

  // The batch's items by key, for FindByKey; made at its first lookup that
  // the fingerprints do not answer (none, in a new replica's first
  // detection: sorting a batch's keys took a tenth of its commit).
  void IndexPendingKeys() {
    if (plan_ == nullptr || pending_keys_indexed_) return;
    pending_keys_indexed_ = true;
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (!PendingKey(pending_[i]).empty()) pending_keys_.push_back(static_cast<uint32_t>(i));
    }
    std::sort(pending_keys_.begin(), pending_keys_.end(), [this](uint32_t a, uint32_t b) {
      return PendingKey(pending_[a]) < PendingKey(pending_[b]);
    });
  }

  std::vector<Pending>::const_iterator LowerBoundPending(const ItemId& id) const {
    return std::lower_bound(pending_.begin(), pending_.end(), id,
                            [](const Pending& p, const ItemId& i) { return p.id < i; });
  }
  const Pending* FindPending(const ItemId& id) const {
    auto it = LowerBoundPending(id);
    return it != pending_.end() && it->id == id ? &*it : nullptr;
  }
  std::string_view PendingKey(const Pending& pending) const {
    return pending.item < 0 ? std::string_view() : plan_->items[pending.item].key;
  }
  Result<std::optional<ItemMetadata>> ReadPending(const Pending& pending) const {
    std::optional<ItemMetadata> item;
    if (pending.item < 0) return item;
    const PlannedItem& planned = plan_->items[pending.item];
    item.emplace();
    item->id = planned.id;
    item->key = planned.key;
    MESHSYNC_RETURN_IF_ERROR(store::DecodeItemVersions(planned.versions, *item));
    return item;
  }

  // Reads between two commits share one read transaction: taking and
  // dropping WAL read locks (fcntl) per point lookup cost more than the
  // lookups themselves. Only this store writes the file (its replica is
  // locked), and Write ends the transaction first, so the snapshot lacks at
  // most the batch being written in the background, which reads take from
  // plan_ until Drain ends the transaction again. A process that keeps a
  // store open for long between commits (a daemon) holds back WAL
  // checkpoints meanwhile and should commit or reopen.
  //
  // The snapshot is also renewed once a background write or a checkpoint
  // that copied all of the log has ended. A checkpoint copies no further
  // than the oldest snapshot, and the log starts over (from its first page,
  // instead of growing) only at a commit that finds all of it copied and no
  // snapshot taken before that: renewed after the write, the snapshot lets
  // the next checkpoint copy everything; renewed after that checkpoint, it
  // no longer stands in the way of the next commit.
  Status BeginRead() {
    if (reading_) {
      if (Progress() == read_progress_) return Status::Ok();
      EndRead();
    }
    read_progress_ = Progress();
    if (checkpointer_ != nullptr && checkpointer_->behind()) checkpointer_->Request();
    MESHSYNC_RETURN_IF_ERROR(Exec("BEGIN"));
    reading_ = true;
    return Status::Ok();
  }
  uint64_t Progress() const {
    return (worker_ != nullptr ? worker_->finished() : 0) +
           (checkpointer_ != nullptr ? checkpointer_->caught_up() : 0);
  }
  void EndRead() {
    if (!reading_ || (snapshot_ && db_ != nullptr && !closing_)) return;
    reading_ = false;
    Exec("COMMIT").IgnoreError();  // a read transaction: nothing to lose
  }

  Status Exec(const char* sql) { return Exec(db_, sql); }
  static Status Exec(sqlite3* db, const char* sql) {
    char* error = nullptr;
    int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
    if (rc != SQLITE_OK) {
      std::string message = error != nullptr ? error : sqlite3_errstr(rc);
      sqlite3_free(error);
      Status status = SqliteError(nullptr, rc, sql);
      return Status(status.code(), std::string(sql) + ": " + message);
    }
    return Status::Ok();
  }

  Status Init(const std::string& path, std::string_view provider_name, Random& random) {
    // What the last process to write the store left in its log.
    struct stat log;
    const off_t left_log = ::stat((path + "-wal").c_str(), &log) == 0 ? log.st_size : 0;
    int rc =
        sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "opening metadata store " + path);
    sqlite3_busy_timeout(db_, 10'000);
    // A new store gets 4 KiB pages (an existing one keeps its own). Stores
    // used to get 16 KiB, for fewer reads when a session read every item;
    // sessions now read what changed (the change log), and a change of one
    // item writes a page to the log and the database: 4 KiB pages made an
    // incremental sync of 1,000 table rows 12% faster and a no-change
    // resync of 100,000 files no slower.
    MESHSYNC_RETURN_IF_ERROR(Exec("PRAGMA page_size=4096"));
    MESHSYNC_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
    MESHSYNC_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
    sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    if (sqlite3_threadsafe() != 0) {
      checkpointer_ = std::make_unique<Checkpointer>(path);
      sqlite3_wal_hook(db_, &SqliteStore::Committed, this);  // replaces the automatic checkpoint
    }
    MESHSYNC_RETURN_IF_ERROR(Migrate());
    // Every write after the migration goes through a connection of its own,
    // so that a batch may be written while this one reads (Write).
    if (sqlite3_threadsafe() == 0) {
      writer_ = db_;  // no background writes without threads: Write waits
    } else {
      rc = sqlite3_open_v2(path.c_str(), &writer_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
      if (rc != SQLITE_OK) return SqliteError(writer_, rc, "opening metadata store " + path);
      sqlite3_busy_timeout(writer_, 10'000);
      MESHSYNC_RETURN_IF_ERROR(Exec(writer_, "PRAGMA synchronous=FULL"));
      sqlite3_db_config(writer_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
      sqlite3_wal_hook(writer_, &SqliteStore::Committed, this);
    }
    MESHSYNC_RETURN_IF_ERROR(Prepare());
    MESHSYNC_RETURN_IF_ERROR(PrepareWrites());
    MESHSYNC_RETURN_IF_ERROR(LoadState(provider_name, &random));
    // An empty store holds only what this object writes from here on (its
    // replica is locked, so nothing else writes it): known_ knows all of it.
    Statement any;
    MESHSYNC_RETURN_IF_ERROR(any.Prepare(db_, "SELECT 1 FROM items LIMIT 1"));
    bool empty = !any.Step();
    MESHSYNC_RETURN_IF_ERROR(any.Finish());
    if (empty) known_.emplace(kMaxKnown);
    if (durability_ == StoreDurability::kOwnVersions && checkpointer_ != nullptr &&
        writer_ != db_) {
      auto pin = std::make_unique<LogPin>();
      if (pin->Open(path)) {
        pin->Hold();
        pin_ = std::move(pin);
      }
      // What the last run left in the log (kOwnVersions does not truncate
      // it) is copied now, while the device is idle: a checkpoint syncs. A
      // longer log (an initial sync of 100,000 files leaves 11,000 pages)
      // would compete with the walk of the folder for tens of milliseconds
      // more: it waits for the first commit, as with kEveryCommit.
      if (left_log > kLogHeaderBytes && left_log < kMaxPinnedPages * kLogFrameBytes) {
        checkpointer_->Request();
      }
    }
    return Status::Ok();
  }

  // A read-only connection whose one read transaction lasts as long as the
  // store: every read sees the state of the moment it was opened, while the
  // replica's own connection goes on committing.
  Status InitSnapshot(const std::string& path, std::string_view provider_name) {
    int rc =
        sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "opening metadata store " + path);
    sqlite3_busy_timeout(db_, 10'000);
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    MESHSYNC_ASSIGN_OR_RETURN(int64_t current, SchemaVersion());
    if (current != kSchemaVersion) {
      return FailedPreconditionError("metadata store " + path + " has schema version " +
                                     std::to_string(current) + ", not " +
                                     std::to_string(kSchemaVersion));
    }
    MESHSYNC_RETURN_IF_ERROR(Prepare());
    return LoadState(provider_name, nullptr);
  }

  // SQLite's hook after each commit, with the pages now in the log.
  static int Committed(void* arg, sqlite3* db, const char* schema, int pages) {
    SqliteStore& store = *static_cast<SqliteStore*>(arg);
    Checkpointer& checkpointer = *store.checkpointer_;
    checkpointer.Committed();
    store.log_pages_.store(pages);
    // A pinned log does not start over: count what was added since the last
    // checkpoint, not the log's length.
    int added = store.pin_ != nullptr ? checkpointer.Uncopied(pages) : pages;
    if (added >= kCheckpointPages && !checkpointer.Request()) {
      sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    }
    return SQLITE_OK;
  }

  Result<int64_t> SchemaVersion() {
    Statement version;
    MESHSYNC_RETURN_IF_ERROR(version.Prepare(db_, "PRAGMA user_version"));
    int64_t current = version.Step() ? version.Int(0) : 0;
    MESHSYNC_RETURN_IF_ERROR(version.Finish());
    return current;
  }

  Status Migrate() {
    // A store at the current version is only read: a write transaction at
    // every open would sync the WAL (60 ms on a WAL file just created) and
    // leave a checkpoint for the close, even for a run that changes nothing.
    MESHSYNC_ASSIGN_OR_RETURN(int64_t found, SchemaVersion());
    if (found == kSchemaVersion) return Status::Ok();
    MESHSYNC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status status = [&]() -> Status {
      // Again, under the lock: another process may have migrated meanwhile.
      MESHSYNC_ASSIGN_OR_RETURN(int64_t current, SchemaVersion());
      if (current > kSchemaVersion) {
        return FailedPreconditionError("metadata store has schema version " +
                                       std::to_string(current) + ", newer than this meshsync (" +
                                       std::to_string(kSchemaVersion) + "): upgrade meshsync");
      }
      for (int64_t step = current; step < kSchemaVersion; ++step) {
        MESHSYNC_RETURN_IF_ERROR(Exec(kMigrations[step]));
      }
      std::string set_version = "PRAGMA user_version=" + std::to_string(kSchemaVersion);
      return Exec(set_version.c_str());
    }();
    if (status.ok()) return Exec("COMMIT");
    Exec("ROLLBACK").IgnoreError();
    return status;
  }

  Status Prepare() {
    auto make = [this](std::unique_ptr<Statement>& stmt, const char* sql) {
      stmt = std::make_unique<Statement>();
      return stmt->Prepare(db_, sql);
    };
    MESHSYNC_RETURN_IF_ERROR(make(get_item_, "SELECT id, key, versions FROM items WHERE id = ?1"));
    MESHSYNC_RETURN_IF_ERROR(
        make(find_by_key_, "SELECT id, key, versions FROM items WHERE key = ?1"));
    MESHSYNC_RETURN_IF_ERROR(make(scan_,
                                  "SELECT id, key, versions FROM items WHERE id >= ?1 AND id <= ?2 "
                                  "ORDER BY id LIMIT ?3"));
    MESHSYNC_RETURN_IF_ERROR(make(
        visit_, "SELECT id, key, versions FROM items WHERE id >= ?1 AND id <= ?2 ORDER BY id"));
    MESHSYNC_RETURN_IF_ERROR(make(count_changes_, "SELECT count(*) FROM changes WHERE seq > ?1"));
    MESHSYNC_RETURN_IF_ERROR(make(changed_ids_, "SELECT id FROM changes WHERE seq > ?1"));
    MESHSYNC_RETURN_IF_ERROR(make(
        db_bytes_, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"));
    return Status::Ok();
  }

  // The statements Apply runs, on writer_.
  Status PrepareWrites() {
    auto make = [this](std::unique_ptr<Statement>& stmt, const char* sql) {
      stmt = std::make_unique<Statement>();
      return stmt->Prepare(writer_, sql);
    };
    MESHSYNC_RETURN_IF_ERROR(
        make(replace_item_, "INSERT OR REPLACE INTO items(id, key, versions) VALUES (?1, ?2, ?3)"));
    MESHSYNC_RETURN_IF_ERROR(
        make(put_item_,
             "INSERT INTO items(id, key, versions) VALUES (?1, ?2, ?3) ON CONFLICT(id) "
             "DO UPDATE SET versions = excluded.versions WHERE items.key IS excluded.key"));
    MESHSYNC_RETURN_IF_ERROR(make(erase_, "DELETE FROM items WHERE id = ?1"));
    MESHSYNC_RETURN_IF_ERROR(
        make(set_meta_, "INSERT OR REPLACE INTO meta(name, value) VALUES (?1, ?2)"));
    MESHSYNC_RETURN_IF_ERROR(make(add_conflict_, "INSERT INTO conflicts(record) VALUES (?1)"));
    MESHSYNC_RETURN_IF_ERROR(make(drop_conflict_, "DELETE FROM conflicts WHERE id = ?1"));
    MESHSYNC_RETURN_IF_ERROR(make(log_change_, "INSERT INTO changes(seq, id) VALUES (?1, ?2)"));
    MESHSYNC_RETURN_IF_ERROR(make(
        put_checkpoint_, "INSERT OR REPLACE INTO checkpoints(seq, knowledge) VALUES (?1, ?2)"));
    MESHSYNC_RETURN_IF_ERROR(make(drop_checkpoint_, "DELETE FROM checkpoints WHERE seq = ?1"));
    MESHSYNC_RETURN_IF_ERROR(make(prune_checkpoints_, "DELETE FROM checkpoints WHERE seq < ?1"));
    return make(prune_changes_, "DELETE FROM changes WHERE seq < ?1");
  }

  // `random` is null for a snapshot, which never creates a store.
  Status LoadState(std::string_view provider_name, Random* random) {
    Statement read;
    MESHSYNC_RETURN_IF_ERROR(read.Prepare(db_, "SELECT name, value FROM meta"));
    std::optional<std::string> id, provider, keys, tick, knowledge, forgotten, log_off;
    while (read.Step()) {
      std::string_view name = read.Blob(0);
      std::string value(read.Blob(1));
      if (name == "replica_id") id = value;
      if (name == "provider") provider = value;
      if (name == "keys") keys = value;
      if (name == "tick") tick = value;
      if (name == "knowledge") knowledge = value;
      if (name == "forgotten") forgotten = value;
      if (name == "change_log" && value == "off") log_off = value;
    }
    MESHSYNC_RETURN_IF_ERROR(read.Finish());

    if (!id.has_value() && random == nullptr) return NotFoundError("metadata store is empty");
    if (!id.has_value()) {  // a new store
      state_.id = ReplicaId::Generate(*random);
      state_.provider_name = std::string(provider_name);
      state_.keys = ReplicaKeyMap(state_.id);
      uint8_t id_bytes[16];
      state_.id.ToBytes(id_bytes);
      Plan plan;
      plan.meta = StateMeta(state_);
      plan.meta.emplace_back("replica_id", std::string(reinterpret_cast<char*>(id_bytes), 16));
      plan.meta.emplace_back("provider", state_.provider_name);
      return Apply(plan, false);
    }

    if (!provider.has_value() || !keys.has_value() || !tick.has_value() || !knowledge.has_value() ||
        !forgotten.has_value() || id->size() != 16 || tick->size() != 8) {
      return DataLossError("metadata store is missing replica state");
    }
    if (*provider != provider_name) {
      return FailedPreconditionError("metadata store belongs to provider '" + *provider +
                                     "', not '" + std::string(provider_name) + "'");
    }
    state_.id = ReplicaId(Id128::FromBytes(reinterpret_cast<const uint8_t*>(id->data())));
    state_.provider_name = *provider;
    MESHSYNC_ASSIGN_OR_RETURN(state_.keys, store::DecodeKeyMap(*keys));
    if (!(state_.keys.IdOf(0) == state_.id)) return DataLossError("replica key map is corrupt");
    state_.tick = 0;
    for (char byte : *tick) state_.tick = (state_.tick << 8) | static_cast<uint8_t>(byte);
    size_t known = state_.keys.size();
    auto decoded = Knowledge::Decode(*knowledge, state_.keys);
    auto decoded_forgotten = Knowledge::Decode(*forgotten, state_.keys);
    if (!decoded.ok() || !decoded_forgotten.ok() || state_.keys.size() != known) {
      return DataLossError("stored knowledge is corrupt");
    }
    state_.knowledge = *std::move(decoded);
    state_.forgotten = *std::move(decoded_forgotten);
    return LoadChangeLog(log_off.has_value());
  }

  Status LoadChangeLog(bool off) {
    log_off_ = off;
    if (off) return Status::Ok();
    Statement last;
    MESHSYNC_RETURN_IF_ERROR(last.Prepare(db_, "SELECT max(seq) FROM changes"));
    last_seq_ = last.Step() ? last.Int(0) : 0;
    MESHSYNC_RETURN_IF_ERROR(last.Finish());
    Statement read;
    MESHSYNC_RETURN_IF_ERROR(
        read.Prepare(db_, "SELECT seq, knowledge FROM checkpoints ORDER BY seq"));
    while (read.Step()) {
      Checkpoint checkpoint;
      checkpoint.seq = read.Int(0);
      checkpoint.encoded = std::string(read.Blob(1));
      ReplicaKeyMap keys = state_.keys;
      auto decoded = Knowledge::Decode(checkpoint.encoded, keys);
      // Each checkpoint vouches for itself alone, and only saves reads: a
      // corrupt one is passed over (pruned in time), not a reason to refuse
      // the store.
      if (!decoded.ok() || keys.size() != state_.keys.size()) continue;
      checkpoint.knowledge = *std::move(decoded);
      last_seq_ = std::max(last_seq_, checkpoint.seq);
      checkpoints_.push_back(std::move(checkpoint));
    }
    return read.Finish();
  }

  static std::vector<std::pair<const char*, std::string>> StateMeta(const ReplicaState& state) {
    std::string tick(8, '\0');  // big-endian, so the file reads the same anywhere
    for (int byte = 0; byte < 8; ++byte)
      tick[byte] = static_cast<char>(state.tick >> (56 - 8 * byte));
    return {{"keys", store::EncodeKeyMap(state.keys)},
            {"tick", std::move(tick)},
            {"knowledge", state.knowledge.Encode(state.keys)},
            {"forgotten", state.forgotten.Encode(state.keys)}};
  }

  void PlanBatch(const StoreBatch& batch, ChangeLog& log, Plan& plan) {
    plan.erasures = batch.erasures;
    plan.items.reserve(batch.upserts.size());
    for (const ItemMetadata& item : batch.upserts) {
      plan.items.push_back(PlannedItem{item.id, item.key, store::EncodeItemVersions(item)});
    }
    if (!log.off && !batch.upserts.empty()) {
      plan.first_seq = log.last_seq + 1;
      log.last_seq += static_cast<int64_t>(batch.upserts.size());
    }
    plan.resolved_conflicts = batch.resolved_conflicts;
    for (const ConflictRecord& record : batch.new_conflicts)
      plan.new_conflicts.push_back(store::EncodeConflict(record));
    if (batch.keys || batch.tick || batch.knowledge || batch.forgotten) {
      ReplicaState next = state_;
      if (batch.keys) next.keys = *batch.keys;
      if (batch.tick) next.tick = std::max(next.tick, *batch.tick);
      if (batch.knowledge) next.knowledge = *batch.knowledge;
      if (batch.forgotten) next.forgotten = *batch.forgotten;
      plan.meta = StateMeta(next);
    }
    PlanCheckpoints(batch, log, plan);
  }

  // After the batch's writes: a checkpoint for the knowledge it leaves.
  void PlanCheckpoints(const StoreBatch& batch, ChangeLog& log, Plan& plan) {
    if (log.off || (batch.upserts.empty() && !batch.knowledge)) return;
    const Knowledge& known = batch.knowledge ? *batch.knowledge : state_.knowledge;
    bool sound = !batch.knowledge || batch.knowledge->Contains(state_.knowledge);
    for (size_t i = 0; sound && i < batch.upserts.size(); ++i)
      sound = KnowsAllOf(known, batch.upserts[i]);
    if (!sound) {
      log.off = true;
      log.checkpoints.clear();
      plan.log_off = true;
      return;
    }
    std::vector<Checkpoint>& points = log.checkpoints;
    // Knowledge only grew since a checkpoint at the same change: that one
    // asks less of a peer for the same start.
    if (!points.empty() && points.back().seq == log.last_seq) return;
    if (!points.empty() && points.back().knowledge == known) {
      plan.drop_checkpoint = points.back().seq;
      points.back().seq = log.last_seq;
    } else {
      const ReplicaKeyMap& keys = batch.keys ? *batch.keys : state_.keys;
      points.push_back(Checkpoint{log.last_seq, known, known.Encode(keys)});
    }
    plan.put_checkpoint.emplace(points.back().seq, points.back().encoded);

    size_t drop = 0;
    while (points.size() - drop > kMaxCheckpoints ||
           (points.size() - drop > 1 && log.last_seq - points[drop].seq > kMaxLogged)) {
      ++drop;
    }
    if (drop == 0) return;
    points.erase(points.begin(), points.begin() + static_cast<ptrdiff_t>(drop));
    plan.prune_before = points.front().seq;
  }

  // Carries out `plan` in one transaction on writer_, on whichever thread
  // holds the store's writes at the moment (see Write).
  // Writes `plan` in one transaction on writer_; a staged plan commits only
  // once its gate opens (ReleaseStaged), and rolls back if it is abandoned.
  Status Apply(const Plan& plan, bool staged) {
    if (pin_ != nullptr) {
      // A durable commit syncs anyway: the log may start over with it.
      if (plan.durable || log_pages_.load() >= kMaxPinnedPages) pin_->Release();
      MESHSYNC_RETURN_IF_ERROR(SyncCommits(plan.durable));
    }
    Status status = Exec(writer_, "BEGIN IMMEDIATE");
    if (status.ok()) status = WritePlan(plan);
    if (staged) {
      std::unique_lock<std::mutex> lock(gate_mu_);
      gate_open_.wait(lock, [this] { return gate_ != Gate::kHeld; });
      if (status.ok() && gate_ == Gate::kAbandon)
        status = AbortedError("a staged metadata batch was abandoned");
    }
    if (status.ok()) status = Exec(writer_, "COMMIT");
    if (!status.ok()) {
      Exec(writer_, "ROLLBACK").IgnoreError();  // nothing more to do if even that fails
      return status.WithContext("committing metadata");
    }
    if (pin_ != nullptr && log_pages_.load() < kMaxPinnedPages) pin_->Hold();
    return Status::Ok();
  }

  // Whether the writer's commits sync (FULL) or are left to the system's
  // write-back (NORMAL; in WAL mode SQLite still syncs checkpoints and a
  // log that starts over).
  Status SyncCommits(bool sync) {
    if (sync == writer_syncs_) return Status::Ok();
    MESHSYNC_RETURN_IF_ERROR(
        Exec(writer_, sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
    writer_syncs_ = sync;
    return Status::Ok();
  }

  Status WritePlan(const Plan& plan) {
    for (const ItemId& id : plan.erasures) {
      erase_->BindId(1, id);
      MESHSYNC_RETURN_IF_ERROR(erase_->Run());
    }
    int64_t seq = plan.first_seq;
    for (const PlannedItem& item : plan.items) {
      // A new item is inserted, and one that keeps its key is updated in
      // place, which leaves the key index alone (a replacement rewrites its
      // entry: a page a change); one statement either way, one search of
      // the table.
      put_item_->BindId(1, item.id);
      BindKey(*put_item_, 2, item.key);
      put_item_->BindBlob(3, item.versions);
      MESHSYNC_RETURN_IF_ERROR(put_item_->Run());
      if (sqlite3_changes(writer_) == 0) {
        replace_item_->BindId(1, item.id);
        BindKey(*replace_item_, 2, item.key);
        replace_item_->BindBlob(3, item.versions);
        MESHSYNC_RETURN_IF_ERROR(replace_item_->Run());
      }
      if (seq > 0) {
        log_change_->BindInt(1, seq++);
        log_change_->BindId(2, item.id);
        MESHSYNC_RETURN_IF_ERROR(log_change_->Run());
      }
    }
    for (uint64_t id : plan.resolved_conflicts) {
      drop_conflict_->BindInt(1, static_cast<int64_t>(id));
      MESHSYNC_RETURN_IF_ERROR(drop_conflict_->Run());
    }
    for (const std::string& record : plan.new_conflicts) {
      add_conflict_->BindBlob(1, record);
      MESHSYNC_RETURN_IF_ERROR(add_conflict_->Run());
    }
    for (const auto& [name, value] : plan.meta) MESHSYNC_RETURN_IF_ERROR(WriteMeta(name, value));
    if (plan.log_off) {
      MESHSYNC_RETURN_IF_ERROR(Exec(writer_, "DELETE FROM changes; DELETE FROM checkpoints"));
      return WriteMeta("change_log", "off");
    }
    if (plan.drop_checkpoint) {
      drop_checkpoint_->BindInt(1, *plan.drop_checkpoint);
      MESHSYNC_RETURN_IF_ERROR(drop_checkpoint_->Run());
    }
    if (plan.put_checkpoint) {
      put_checkpoint_->BindInt(1, plan.put_checkpoint->first);
      put_checkpoint_->BindBlob(2, plan.put_checkpoint->second);
      MESHSYNC_RETURN_IF_ERROR(put_checkpoint_->Run());
    }
    if (plan.prune_before) {
      prune_checkpoints_->BindInt(1, *plan.prune_before);
      MESHSYNC_RETURN_IF_ERROR(prune_checkpoints_->Run());
      prune_changes_->BindInt(1, *plan.prune_before);
      MESHSYNC_RETURN_IF_ERROR(prune_changes_->Run());
    }
    return Status::Ok();
  }

  Status WriteMeta(const char* name, std::string_view value) {
    set_meta_->BindText(1, name);
    set_meta_->BindBlob(2, value);
    return set_meta_->Run();
  }

  static void BindKey(Statement& statement, int index, const std::string& key) {
    if (key.empty()) {
      statement.BindNull(index);
    } else {
      statement.BindBlob(index, key);
    }
  }

  // Runs a bound query that yields at most one item.
  static Result<std::optional<ItemMetadata>> ReadOptionalItem(Statement& query) {
    std::optional<ItemMetadata> item;
    if (query.Step()) {
      item.emplace();
      Status status = ReadItem(query, *item);
      if (!status.ok()) {
        query.Finish().IgnoreError();
        return status;
      }
    }
    MESHSYNC_RETURN_IF_ERROR(query.Finish());
    return item;
  }

  static Status ReadItem(const Statement& row, ItemMetadata& item) {
    std::string_view id = row.Blob(0);
    if (id.size() != 16) return DataLossError("corrupt item id in metadata store");
    item.id = ItemId(Id128::FromBytes(reinterpret_cast<const uint8_t*>(id.data())));
    // Assigned, not replaced: an item read into again keeps its buffers.
    if (row.IsNull(1)) {
      item.key.clear();
    } else {
      item.key.assign(row.Blob(1));
    }
    return store::DecodeItemVersions(row.Blob(2), item);
  }

  sqlite3* db_ = nullptr;      // reads (and the migration at open)
  sqlite3* writer_ = nullptr;  // every write after that (Apply); db_ without threads
  std::unique_ptr<Checkpointer> checkpointer_;  // null: SQLite's automatic checkpoints
  StoreDurability durability_ = StoreDurability::kEveryCommit;
  std::unique_ptr<LogPin> pin_;    // kOwnVersions: keeps the log from starting over
  bool writer_syncs_ = true;       // writer_'s synchronous setting is FULL
  std::atomic<int> log_pages_{0};  // in the log after the last commit (Committed)
  bool reading_ = false;           // a read transaction is open (BeginRead)
  uint64_t read_progress_ = 0;     // Progress() when it was opened
  bool snapshot_ = false;          // read-only, one read transaction for its life
  bool closing_ = false;
  ReplicaState state_;
  bool visiting_ = false;  // visit_ is stepping (VisitItems)
  // The batch being written in the background, until Drain: what Apply
  // runs on worker_, and what reads lay over what is stored (Pending).
  std::unique_ptr<Plan> plan_;
  std::vector<Pending> pending_;        // by id
  std::vector<uint32_t> pending_keys_;  // indices into pending_ of keyed items, by key
  bool pending_keys_indexed_ = false;   // pending_keys_ is made (IndexPendingKeys)
  bool writing_ = false;                // worker_ has plan_ and may not be done
  std::unique_ptr<Worker> worker_;
  // A staged batch (StageInBackground, in plan_) awaits ReleaseStaged or
  // AbandonStaged: the worker holds its commit at the gate, or, without a
  // thread, it is not written yet (staged_unwritten_).
  bool staged_ = false;
  bool staged_unwritten_ = false;
  std::mutex gate_mu_;
  std::condition_variable gate_open_;
  Gate gate_ = Gate::kHeld;  // guarded by gate_mu_
  Status failed_;            // a background write failed: every call fails with this
  // While the store has held only what this object wrote since it was
  // empty (a new replica's first detection, which looks up every row and
  // finds none): the fingerprint of every id and key it holds. A lookup of
  // an id or key that is not here finds nothing without a query.
  std::optional<store::FingerprintSet> known_;
  std::unique_ptr<Statement> get_item_, find_by_key_, scan_, visit_, replace_item_, put_item_,
      erase_, set_meta_, add_conflict_, drop_conflict_, log_change_, count_changes_, changed_ids_,
      put_checkpoint_, drop_checkpoint_, prune_checkpoints_, prune_changes_, db_bytes_;
  // The change log (see the file comment), as of the last commit.
  std::vector<Checkpoint> checkpoints_;
  int64_t last_seq_ = 0;
  bool log_off_ = false;
};

}  // namespace

Result<std::unique_ptr<MetadataStore>> OpenSqliteStore(const std::string& path,
                                                       std::string_view provider_name,
                                                       Random& random, StoreDurability durability) {
  return SqliteStore::Open(path, provider_name, random, durability);
}

Result<std::unique_ptr<MetadataStore>> OpenSqliteSnapshot(const std::string& path,
                                                          std::string_view provider_name) {
  return SqliteStore::OpenSnapshot(path, provider_name);
}

}  // namespace meshsync
