// The SQLite metadata store: one database file per replica, WAL mode.
//
// Schema (version 1, recorded in PRAGMA user_version):
//   meta(name PRIMARY KEY, value)   replica id, provider, key map, tick,
//                                   knowledge, forgotten knowledge
//   items(id PRIMARY KEY, key, versions)  WITHOUT ROWID, so rows are stored
//                                   in item-id order and scans are sequential
//   conflicts(id INTEGER PRIMARY KEY, record)
//
// Durability: WAL with synchronous=NORMAL. A crash of the process never
// loses a committed transaction; a power cut may lose the last few, but the
// database stays consistent, and a lost metadata commit is recovered like any
// crash between data and metadata (the provider's next change detection sees
// the data and the engine reconciles it).
#include <sqlite3.h>

#include "meshsync/metadata_store.h"
#include "src/store/item_codec.h"

namespace meshsync {
namespace {

constexpr int kSchemaVersion = 1;

// Each step brings the schema from version (index) to version (index + 1).
constexpr const char* kMigrations[] = {
    R"sql(
      CREATE TABLE meta(name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
      CREATE TABLE items(id BLOB PRIMARY KEY, key BLOB, versions BLOB NOT NULL) WITHOUT ROWID;
      CREATE INDEX items_by_key ON items(key) WHERE key IS NOT NULL;
      CREATE TABLE conflicts(id INTEGER PRIMARY KEY, record BLOB NOT NULL);
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
  void BindBlob(int index, std::string_view bytes) {
    sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
  void BindText(int index, std::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
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

class SqliteStore final : public MetadataStore {
 public:
  ~SqliteStore() override {
    closing_ = true;
    EndRead();
    // Statements must be finalized before the connection closes.
    get_item_.reset();
    find_by_key_.reset();
    scan_.reset();
    visit_.reset();
    upsert_.reset();
    erase_.reset();
    set_meta_.reset();
    add_conflict_.reset();
    drop_conflict_.reset();
    if (db_ != nullptr) sqlite3_close(db_);
  }

  static Result<std::unique_ptr<MetadataStore>> Open(const std::string& path,
                                                     std::string_view provider_name,
                                                     Random& random) {
    auto store = std::unique_ptr<SqliteStore>(new SqliteStore());
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
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    get_item_->BindId(1, id);
    return ReadOptionalItem(*get_item_);
  }

  Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) override {
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    find_by_key_->BindBlob(1, key);
    return ReadOptionalItem(*find_by_key_);
  }

  Status ScanItems(const ItemId& first, const ItemId& last, size_t limit,
                   std::vector<ItemMetadata>& out) override {
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

  Result<size_t> CountItems() override {
    MESHSYNC_RETURN_IF_ERROR(BeginRead());
    Statement count;
    MESHSYNC_RETURN_IF_ERROR(count.Prepare(db_, "SELECT count(*) FROM items"));
    size_t n = count.Step() ? static_cast<size_t>(count.Int(0)) : 0;
    MESHSYNC_RETURN_IF_ERROR(count.Finish());
    return n;
  }

  Result<std::vector<ConflictRecord>> ListConflicts() override {
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

  Status Commit(const StoreBatch& batch) override {
    if (batch.empty()) return Status::Ok();
    if (snapshot_) return FailedPreconditionError("a metadata snapshot is read-only");
    if (visiting_) return FailedPreconditionError("the metadata store is being read (VisitItems)");
    EndRead();
    MESHSYNC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status status = WriteBatch(batch);
    if (status.ok()) status = Exec("COMMIT");
    if (!status.ok()) {
      Exec("ROLLBACK").IgnoreError();  // nothing more to do if even that fails
      return status.WithContext("committing metadata");
    }
    // The in-memory copy changes only once the transaction is durable.
    if (batch.keys) state_.keys = *batch.keys;
    if (batch.tick) state_.tick = std::max(state_.tick, *batch.tick);
    if (batch.knowledge) state_.knowledge = *batch.knowledge;
    if (batch.forgotten) state_.forgotten = *batch.forgotten;
    return Status::Ok();
  }

 private:
  SqliteStore() = default;

  // Reads between two commits share one read transaction: taking and
  // dropping WAL read locks (fcntl) per point lookup cost more than the
  // lookups themselves. Only this connection writes the store (its replica
  // is locked), so the snapshot is never stale; Commit ends it first. A
  // process that keeps a store open for long between commits (a daemon)
  // holds back WAL checkpoints meanwhile and should commit or reopen.
  Status BeginRead() {
    if (reading_) return Status::Ok();
    MESHSYNC_RETURN_IF_ERROR(Exec("BEGIN"));
    reading_ = true;
    return Status::Ok();
  }
  void EndRead() {
    if (!reading_ || (snapshot_ && db_ != nullptr && !closing_)) return;
    reading_ = false;
    Exec("COMMIT").IgnoreError();  // a read transaction: nothing to lose
  }

  Status Exec(const char* sql) {
    char* error = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
    if (rc != SQLITE_OK) {
      std::string message = error != nullptr ? error : sqlite3_errstr(rc);
      sqlite3_free(error);
      Status status = SqliteError(nullptr, rc, sql);
      return Status(status.code(), std::string(sql) + ": " + message);
    }
    return Status::Ok();
  }

  Status Init(const std::string& path, std::string_view provider_name, Random& random) {
    int rc =
        sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "opening metadata store " + path);
    sqlite3_busy_timeout(db_, 10'000);
    // A new store gets 16 KiB pages (an existing one keeps its own): reading
    // all items, which every scan of a folder and every session does, takes
    // a quarter of the reads of SQLite's default 4 KiB, and each read is a
    // system call.
    MESHSYNC_RETURN_IF_ERROR(Exec("PRAGMA page_size=16384"));
    MESHSYNC_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
    MESHSYNC_RETURN_IF_ERROR(Exec("PRAGMA synchronous=NORMAL"));
    MESHSYNC_RETURN_IF_ERROR(Migrate());
    MESHSYNC_RETURN_IF_ERROR(Prepare());
    return LoadState(provider_name, &random);
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
    MESHSYNC_RETURN_IF_ERROR(
        make(upsert_, "INSERT OR REPLACE INTO items(id, key, versions) VALUES (?1, ?2, ?3)"));
    MESHSYNC_RETURN_IF_ERROR(make(erase_, "DELETE FROM items WHERE id = ?1"));
    MESHSYNC_RETURN_IF_ERROR(
        make(set_meta_, "INSERT OR REPLACE INTO meta(name, value) VALUES (?1, ?2)"));
    MESHSYNC_RETURN_IF_ERROR(make(add_conflict_, "INSERT INTO conflicts(record) VALUES (?1)"));
    MESHSYNC_RETURN_IF_ERROR(make(drop_conflict_, "DELETE FROM conflicts WHERE id = ?1"));
    return Status::Ok();
  }

  // `random` is null for a snapshot, which never creates a store.
  Status LoadState(std::string_view provider_name, Random* random) {
    Statement read;
    MESHSYNC_RETURN_IF_ERROR(read.Prepare(db_, "SELECT name, value FROM meta"));
    std::optional<std::string> id, provider, keys, tick, knowledge, forgotten;
    while (read.Step()) {
      std::string_view name = read.Blob(0);
      std::string value(read.Blob(1));
      if (name == "replica_id") id = value;
      if (name == "provider") provider = value;
      if (name == "keys") keys = value;
      if (name == "tick") tick = value;
      if (name == "knowledge") knowledge = value;
      if (name == "forgotten") forgotten = value;
    }
    MESHSYNC_RETURN_IF_ERROR(read.Finish());

    if (!id.has_value() && random == nullptr) return NotFoundError("metadata store is empty");
    if (!id.has_value()) {  // a new store
      state_.id = ReplicaId::Generate(*random);
      state_.provider_name = std::string(provider_name);
      state_.keys = ReplicaKeyMap(state_.id);
      MESHSYNC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
      uint8_t id_bytes[16];
      state_.id.ToBytes(id_bytes);
      Status status =
          WriteMeta("replica_id", std::string_view(reinterpret_cast<char*>(id_bytes), 16));
      if (status.ok()) status = WriteMeta("provider", state_.provider_name);
      if (status.ok()) status = WriteState(state_);
      if (status.ok()) return Exec("COMMIT");
      Exec("ROLLBACK").IgnoreError();
      return status;
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
    return Status::Ok();
  }

  Status WriteMeta(const char* name, std::string_view value) {
    set_meta_->BindText(1, name);
    set_meta_->BindBlob(2, value);
    return set_meta_->Run();
  }

  Status WriteState(const ReplicaState& state) {
    std::string tick(8, '\0');  // big-endian, so the file reads the same anywhere
    for (int byte = 0; byte < 8; ++byte)
      tick[byte] = static_cast<char>(state.tick >> (56 - 8 * byte));
    MESHSYNC_RETURN_IF_ERROR(WriteMeta("keys", store::EncodeKeyMap(state.keys)));
    MESHSYNC_RETURN_IF_ERROR(WriteMeta("tick", tick));
    MESHSYNC_RETURN_IF_ERROR(WriteMeta("knowledge", state.knowledge.Encode(state.keys)));
    return WriteMeta("forgotten", state.forgotten.Encode(state.keys));
  }

  Status WriteBatch(const StoreBatch& batch) {
    for (const ItemId& id : batch.erasures) {
      erase_->BindId(1, id);
      MESHSYNC_RETURN_IF_ERROR(erase_->Run());
    }
    std::string versions;
    for (const ItemMetadata& item : batch.upserts) {
      upsert_->BindId(1, item.id);
      if (item.key.empty()) {
        upsert_->BindNull(2);
      } else {
        upsert_->BindBlob(2, item.key);
      }
      versions = store::EncodeItemVersions(item);
      upsert_->BindBlob(3, versions);
      MESHSYNC_RETURN_IF_ERROR(upsert_->Run());
    }
    for (uint64_t id : batch.resolved_conflicts) {
      drop_conflict_->BindInt(1, static_cast<int64_t>(id));
      MESHSYNC_RETURN_IF_ERROR(drop_conflict_->Run());
    }
    for (const ConflictRecord& record : batch.new_conflicts) {
      add_conflict_->BindBlob(1, store::EncodeConflict(record));
      MESHSYNC_RETURN_IF_ERROR(add_conflict_->Run());
    }
    if (batch.keys || batch.tick || batch.knowledge || batch.forgotten) {
      ReplicaState next = state_;
      if (batch.keys) next.keys = *batch.keys;
      if (batch.tick) next.tick = std::max(next.tick, *batch.tick);
      if (batch.knowledge) next.knowledge = *batch.knowledge;
      if (batch.forgotten) next.forgotten = *batch.forgotten;
      MESHSYNC_RETURN_IF_ERROR(WriteState(next));
    }
    return Status::Ok();
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

  sqlite3* db_ = nullptr;
  bool reading_ = false;   // a read transaction is open (BeginRead)
  bool snapshot_ = false;  // read-only, one read transaction for its life
  bool closing_ = false;
  ReplicaState state_;
  bool visiting_ = false;  // visit_ is stepping (VisitItems)
  std::unique_ptr<Statement> get_item_, find_by_key_, scan_, visit_, upsert_, erase_, set_meta_,
      add_conflict_, drop_conflict_;
};

}  // namespace

Result<std::unique_ptr<MetadataStore>> OpenSqliteStore(const std::string& path,
                                                       std::string_view provider_name,
                                                       Random& random) {
  return SqliteStore::Open(path, provider_name, random);
}

Result<std::unique_ptr<MetadataStore>> OpenSqliteSnapshot(const std::string& path,
                                                          std::string_view provider_name) {
  return SqliteStore::OpenSnapshot(path, provider_name);
}

}  // namespace meshsync
