// The two Connection implementations: SQLite through its C API, PostgreSQL
// through libpq. Both cache prepared statements by their SQL text.
//
// libpq is loaded (dlopen) when the first PostgreSQL connection is made, not
// linked: it brings twenty libraries (Kerberos, LDAP, SASL, GnuTLS, p11-kit)
// that every meshsync process would otherwise map and relocate at start,
// 3.4 MiB of resident memory per process, although only `meshsync db` with a
// postgresql:// URL ever uses them.
#include "sql/connection.h"

#include <dlfcn.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "meshsync/record.h"

namespace meshsync::sql {

std::string Connection::Placeholder(size_t n) const {
  return (dialect() == Dialect::kPostgres ? "$" : "?") + std::to_string(n);
}

Result<std::string> QuoteIdent(std::string_view name) {
  if (name.empty()) return InvalidArgumentError("an empty name is not an identifier");
  if (name.find('\0') != std::string_view::npos)
    return InvalidArgumentError("a name holds a NUL byte");
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

Result<std::optional<std::string>> QueryValue(Connection& db, const std::string& sql,
                                              std::span<const Param> params) {
  std::optional<std::string> value;
  MESHSYNC_RETURN_IF_ERROR(db.Query(sql, params, [&value](Row row) {
    if (!value && !row.empty()) value = row[0];
    return Status::Ok();
  }));
  return value;
}

namespace {

// Prepared statements by their SQL text. Adding one to a full cache first
// drops the least recently used that is not running (a query runs while its
// row callback does, and the callback may query too). Handles stay where
// they are until dropped (the map's nodes do not move).
template <typename Handle>
class StatementCache {
 public:
  struct Entry {
    Handle handle;
    uint64_t used = 0;
    int running = 0;
  };

  Entry* Find(const std::string& sql) {
    auto it = entries_.find(sql);
    if (it == entries_.end()) return nullptr;
    it->second.used = ++clock_;
    return &it->second;
  }

  // REQUIRES: `sql` is not cached. `drop` gets each handle dropped.
  template <typename Drop>
  Entry& Add(const std::string& sql, Handle handle, Drop drop) {
    while (entries_.size() >= kMaxCachedStatements) {
      auto oldest = entries_.end();
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->second.running > 0) continue;
        if (oldest == entries_.end() || it->second.used < oldest->second.used) oldest = it;
      }
      if (oldest == entries_.end()) break;  // all running: the cache grows for now
      drop(oldest->second.handle);
      entries_.erase(oldest);
    }
    return entries_.emplace(sql, Entry{std::move(handle), ++clock_, 0}).first->second;
  }

  size_t size() const { return entries_.size(); }

  template <typename Fn>
  void ForEach(Fn fn) {
    for (auto& [sql, entry] : entries_) fn(entry.handle);
  }

 private:
  std::unordered_map<std::string, Entry> entries_;
  uint64_t clock_ = 0;
};

// ---------------------------------------------------------------- SQLite

class SqliteConnection final : public Connection {
 public:
  SqliteConnection(sqlite3* db, std::string name) : db_(db), name_(std::move(name)) {}
  ~SqliteConnection() override {
    cache_.ForEach([](sqlite3_stmt* stmt) { sqlite3_finalize(stmt); });
    sqlite3_close(db_);
  }

  Dialect dialect() const override { return Dialect::kSqlite; }
  const std::string& name() const override { return name_; }

  Status Exec(std::string_view sql) override {
    std::string text(sql);
    char* error = nullptr;
    if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      std::string message = error != nullptr ? error : sqlite3_errmsg(db_);
      sqlite3_free(error);
      return Failure(message);
    }
    return Status::Ok();
  }

  Status Query(const std::string& sql, std::span<const Param> params, const RowFn& fn) override {
    MESHSYNC_ASSIGN_OR_RETURN(Running running, Start(sql, params));
    sqlite3_stmt* stmt = running.entry->handle;
    int columns = sqlite3_column_count(stmt);
    std::vector<std::string> row(static_cast<size_t>(columns));
    while (true) {
      int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) return Status::Ok();
      if (rc != SQLITE_ROW) return Failure(sqlite3_errmsg(db_));
      for (int c = 0; c < columns; ++c)
        Encode(sqlite3_column_value(stmt, c), row[static_cast<size_t>(c)]);
      MESHSYNC_RETURN_IF_ERROR(fn(Row(row)));
    }
  }

  Result<int64_t> Execute(const std::string& sql, std::span<const Param> params) override {
    MESHSYNC_ASSIGN_OR_RETURN(Running running, Start(sql, params));
    int rc = sqlite3_step(running.entry->handle);
    if (rc == SQLITE_ROW) return InvalidArgumentError(name_ + ": a statement returned rows");
    if (rc != SQLITE_DONE) return Failure(sqlite3_errmsg(db_));
    return static_cast<int64_t>(sqlite3_changes64(db_));
  }

  // Mirrors Bind and SQLite's conversions on store: NULLs and blobs are
  // stored as they are; an integer unless the column is REAL (which makes it
  // a float), and read back as its decimal (also from a TEXT column); a float
  // only in a REAL column or one without affinity (in the others an integral
  // float becomes an integer), finite and not -0 (stored as the integer 0 if
  // integral); text in a TEXT column or one without affinity, or text with
  // no digit (the others store text that reads as a number as that number),
  // if the database keeps its text in UTF-8.
  // Whatever is bound, it must be canonical: what Encode would make of it.
  bool StoresAsGiven(const Param& p, Affinity column) const override {
    if (IsNull(p.value) || IsBlob(p.value)) return true;
    if (!IsText(p.value)) return false;
    std::string_view payload = Payload(p.value);
    if (p.kind == Kind::kInteger || p.kind == Kind::kBoolean) {
      if (std::optional<int64_t> n = ParseInteger(payload)) {
        return column != Affinity::kReal && std::to_string(*n) == payload;
      }
    } else if (p.kind == Kind::kReal) {
      if (std::optional<double> d = ParseReal(payload)) {
        return (column == Affinity::kReal || column == Affinity::kBlob) && std::isfinite(*d) &&
               !(*d == 0 && std::signbit(*d)) && FormatReal(*d) == payload;
      }
    }
    // Bound as text: a database that keeps text in UTF-16 converts it, and
    // bytes that are not UTF-8 do not come back.
    if (!utf8_) return false;
    if (column == Affinity::kText || column == Affinity::kBlob) return true;
    return std::none_of(payload.begin(), payload.end(),
                        [](char c) { return c >= '0' && c <= '9'; });
  }

  bool HashesFields() const override { return true; }

  bool SetTriggersEnabled(bool enabled) override {
    // A change of the setting makes SQLite prepare its statements again.
    int now = -1;
    return sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_TRIGGER, enabled ? 1 : 0, &now) ==
               SQLITE_OK &&
           now == (enabled ? 1 : 0);
  }

  // Reads the database's text encoding (PRAGMA encoding; set when it was
  // made), which StoresAsGiven depends on.
  // Not through the statement cache: it is run once.
  Status ReadEncoding() {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, "PRAGMA encoding", -1, &stmt, nullptr) != SQLITE_OK)
      return Failure(sqlite3_errmsg(db_));
    int rc = sqlite3_step(stmt);
    const unsigned char* text = rc == SQLITE_ROW ? sqlite3_column_text(stmt, 0) : nullptr;
    utf8_ = text != nullptr && std::string_view(reinterpret_cast<const char*>(text)) == "UTF-8";
    Status status = rc == SQLITE_ROW ? Status::Ok() : Failure(sqlite3_errmsg(db_));
    sqlite3_finalize(stmt);
    return status;
  }
  size_t CachedStatements() const override { return cache_.size(); }

  // meshsync_field_hash(name, value): FieldHashOf(name, the value encoded as
  // Query encodes it), its 64 bits as an integer.
  static void FieldHashFunction(sqlite3_context* context, int argc, sqlite3_value** argv) {
    if (argc != 2 || sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
      sqlite3_result_error(context, "meshsync_field_hash(name, value)", -1);
      return;
    }
    std::string_view name(reinterpret_cast<const char*>(sqlite3_value_text(argv[0])),
                          static_cast<size_t>(sqlite3_value_bytes(argv[0])));
    std::string value;
    Encode(argv[1], value);
    sqlite3_result_int64(context, static_cast<sqlite3_int64>(FieldHashOf(name, value)));
  }

 private:
  Status Failure(std::string_view message) const {
    int code = sqlite3_extended_errcode(db_);
    std::string text = name_ + ": " + std::string(message);
    if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED)
      return UnavailableError(text);
    if ((code & 0xff) == SQLITE_CONSTRAINT || (code & 0xff) == SQLITE_MISMATCH ||
        (code & 0xff) == SQLITE_ERROR || (code & 0xff) == SQLITE_TOOBIG)
      return InvalidArgumentError(text);
    return UnavailableError(text);
  }

  // A cached statement with its parameters bound; resets it and clears its
  // bindings when it goes.
  struct Running {
    StatementCache<sqlite3_stmt*>::Entry* entry = nullptr;
    explicit Running(StatementCache<sqlite3_stmt*>::Entry* e) : entry(e) { ++entry->running; }
    Running(Running&& other) noexcept : entry(std::exchange(other.entry, nullptr)) {}
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;
    Running& operator=(Running&&) = delete;
    ~Running() {
      if (entry == nullptr) return;
      sqlite3_reset(entry->handle);
      sqlite3_clear_bindings(entry->handle);
      --entry->running;
    }
  };

  Result<Running> Start(const std::string& sql, std::span<const Param> params) {
    auto* entry = cache_.Find(sql);
    if (entry == nullptr) {
      sqlite3_stmt* prepared = nullptr;
      if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                             SQLITE_PREPARE_PERSISTENT, &prepared, nullptr) != SQLITE_OK) {
        return Failure(sqlite3_errmsg(db_));
      }
      entry = &cache_.Add(sql, prepared, [](sqlite3_stmt* stmt) { sqlite3_finalize(stmt); });
    }
    Running running(entry);
    for (size_t i = 0; i < params.size(); ++i) {
      MESHSYNC_RETURN_IF_ERROR(Bind(entry->handle, static_cast<int>(i + 1), params[i]));
    }
    return running;
  }

  // Binds without a copy: `p` outlives the statement's run, whose bindings
  // Running clears when it ends.
  Status Bind(sqlite3_stmt* stmt, int i, const Param& p) {
    int rc = SQLITE_OK;
    std::string_view payload = Payload(p.value);
    if (IsNull(p.value)) {
      rc = sqlite3_bind_null(stmt, i);
    } else if (IsBlob(p.value)) {
      rc = sqlite3_bind_blob64(stmt, i, payload.data(), payload.size(), SQLITE_STATIC);
    } else if (!IsText(p.value)) {
      return InvalidArgumentError("a value is not encoded (N, b... or v...)");
    } else if (auto n = p.kind == Kind::kInteger || p.kind == Kind::kBoolean ? ParseInteger(payload)
                                                                             : std::nullopt) {
      rc = sqlite3_bind_int64(stmt, i, *n);
    } else if (auto d = p.kind == Kind::kReal ? ParseReal(payload) : std::nullopt) {
      rc = sqlite3_bind_double(stmt, i, *d);
    } else {
      rc = sqlite3_bind_text64(stmt, i, payload.data(), payload.size(), SQLITE_STATIC, SQLITE_UTF8);
    }
    return rc == SQLITE_OK ? Status::Ok() : Failure(sqlite3_errmsg(db_));
  }

  static void Encode(sqlite3_value* v, std::string& out) {
    switch (sqlite3_value_type(v)) {
      case SQLITE_NULL:
        out = kNull;
        return;
      case SQLITE_INTEGER:
        out = "v" + std::to_string(sqlite3_value_int64(v));
        return;
      case SQLITE_FLOAT:
        out = "v" + FormatReal(sqlite3_value_double(v));
        return;
      case SQLITE_BLOB: {
        const void* data = sqlite3_value_blob(v);
        int size = sqlite3_value_bytes(v);
        out = "b";
        if (size > 0) out.append(static_cast<const char*>(data), static_cast<size_t>(size));
        return;
      }
      default: {
        const unsigned char* text = sqlite3_value_text(v);
        int size = sqlite3_value_bytes(v);
        out = "v";
        if (size > 0) out.append(reinterpret_cast<const char*>(text), static_cast<size_t>(size));
        return;
      }
    }
  }

  sqlite3* db_;
  std::string name_;
  StatementCache<sqlite3_stmt*> cache_;
  bool utf8_ = false;  // the database keeps text in UTF-8 (ReadEncoding)
};

Result<std::unique_ptr<Connection>> ConnectSqlite(std::string_view url) {
  std::string path(url.substr(std::strlen("sqlite:")));
  if (path.empty()) return InvalidArgumentError("sqlite: needs a path (sqlite:PATH)");
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return UnavailableError("cannot open " + path + ": " + message);
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_extended_result_codes(db, 1);
  // On this connection only: nothing of it reaches the user's database.
  if (sqlite3_create_function_v2(
          db, "meshsync_field_hash", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
          nullptr, &SqliteConnection::FieldHashFunction, nullptr, nullptr, nullptr) != SQLITE_OK) {
    std::string message = sqlite3_errmsg(db);
    sqlite3_close(db);
    return UnavailableError("cannot open " + path + ": " + message);
  }
  auto connection = std::make_unique<SqliteConnection>(db, "sqlite:" + path);
  // A file that is not a database fails on the first read, so read now.
  // Savepoints' journals and RETURNING's result tables stay in memory (the
  // default puts them in temporary files: several writes per row saved).
  // A transaction's changed pages stay in the page cache until it commits,
  // up to 64 MiB of them (cache_spill): a batch that spilled pages mid-way
  // synced the rollback journal before each spill. Pages only read stay
  // within SQLite's default 2 MiB (cache_size): a scan reads each page
  // once, and a larger cache filled with them (10 MiB for a table of
  // 100,000 rows) was fresh memory to zero and fault in, 4-5% of an
  // initial sync's CPU. These settings last as long as this connection.
  MESHSYNC_RETURN_IF_ERROR(connection->Exec(
      "SELECT count(*) FROM sqlite_schema; PRAGMA foreign_keys = ON; "
      "PRAGMA temp_store = MEMORY; PRAGMA cache_size = -2048; PRAGMA cache_spill = -65536;"));
  MESHSYNC_RETURN_IF_ERROR(connection->ReadEncoding());
  return std::unique_ptr<Connection>(std::move(connection));
}

// ------------------------------------------------------------ PostgreSQL

// The libpq functions the provider calls, typed by libpq-fe.h.
struct LibPq {
  decltype(&::PQconnectdb) connectdb;
  decltype(&::PQfinish) finish;
  decltype(&::PQstatus) status;
  decltype(&::PQerrorMessage) error_message;
  decltype(&::PQhost) host;
  decltype(&::PQport) port;
  decltype(&::PQdb) db;
  decltype(&::PQexec) exec;
  decltype(&::PQtransactionStatus) transaction_status;
  decltype(&::PQprepare) prepare;
  decltype(&::PQexecPrepared) exec_prepared;
  decltype(&::PQresultStatus) result_status;
  decltype(&::PQresultErrorMessage) result_error_message;
  decltype(&::PQresultErrorField) result_error_field;
  decltype(&::PQclear) clear;
  decltype(&::PQntuples) ntuples;
  decltype(&::PQcmdTuples) cmd_tuples;
  decltype(&::PQnfields) nfields;
  decltype(&::PQftype) ftype;
  decltype(&::PQgetisnull) getisnull;
  decltype(&::PQgetvalue) getvalue;
  decltype(&::PQgetlength) getlength;
};

// The soname of libpq's ABI (Debian's libpq5), loaded once per process and
// never unloaded.
constexpr const char* kLibPq = "libpq.so.5";

Result<const LibPq*> LoadLibPq() {
  static LibPq pq;
  static Status loaded;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = dlopen(kLibPq, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      loaded = FailedPreconditionError(std::string("PostgreSQL needs ") + kLibPq +
                                       " (Debian package libpq5): " + (why ? why : "not found"));
      return;
    }
    std::string missing;
    auto bind = [&]<typename Fn>(Fn& fn, const char* name) {
      fn = reinterpret_cast<Fn>(dlsym(lib, name));
      if (fn == nullptr) missing += std::string(missing.empty() ? "" : ", ") + name;
    };
    bind(pq.connectdb, "PQconnectdb");
    bind(pq.finish, "PQfinish");
    bind(pq.status, "PQstatus");
    bind(pq.error_message, "PQerrorMessage");
    bind(pq.host, "PQhost");
    bind(pq.port, "PQport");
    bind(pq.db, "PQdb");
    bind(pq.exec, "PQexec");
    bind(pq.transaction_status, "PQtransactionStatus");
    bind(pq.prepare, "PQprepare");
    bind(pq.exec_prepared, "PQexecPrepared");
    bind(pq.result_status, "PQresultStatus");
    bind(pq.result_error_message, "PQresultErrorMessage");
    bind(pq.result_error_field, "PQresultErrorField");
    bind(pq.clear, "PQclear");
    bind(pq.ntuples, "PQntuples");
    bind(pq.cmd_tuples, "PQcmdTuples");
    bind(pq.nfields, "PQnfields");
    bind(pq.ftype, "PQftype");
    bind(pq.getisnull, "PQgetisnull");
    bind(pq.getvalue, "PQgetvalue");
    bind(pq.getlength, "PQgetlength");
    if (!missing.empty()) {
      loaded = FailedPreconditionError(std::string(kLibPq) + " lacks " + missing);
    }
  });
  if (!loaded.ok()) return loaded;
  return &pq;
}

constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kFloat4Oid = 700;
constexpr Oid kFloat8Oid = 701;

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class PostgresConnection final : public Connection {
 public:
  PostgresConnection(const LibPq& pq, PGconn* conn, std::string name)
      : pq_(pq), conn_(conn), name_(std::move(name)) {}
  ~PostgresConnection() override { pq_.finish(conn_); }

  Dialect dialect() const override { return Dialect::kPostgres; }
  const std::string& name() const override { return name_; }

  Status Exec(std::string_view sql) override {
    std::string text(sql);
    PGresult* result = pq_.exec(conn_, text.c_str());
    Status status = Check(result);
    pq_.clear(result);
    return status;
  }

  size_t CachedStatements() const override { return prepared_.size(); }

  Status Query(const std::string& sql, std::span<const Param> params, const RowFn& fn) override {
    MESHSYNC_ASSIGN_OR_RETURN(PGresult * result, Run(sql, params));
    Status status;
    int rows = pq_.ntuples(result);
    int columns = pq_.nfields(result);
    std::vector<std::string> row(static_cast<size_t>(columns));
    for (int r = 0; r < rows && status.ok(); ++r) {
      for (int c = 0; c < columns && status.ok(); ++c) {
        status = Read(result, r, c, row[static_cast<size_t>(c)]);
      }
      if (status.ok()) status = fn(Row(row));
    }
    pq_.clear(result);
    return status;
  }

  Result<int64_t> Execute(const std::string& sql, std::span<const Param> params) override {
    MESHSYNC_ASSIGN_OR_RETURN(PGresult * result, Run(sql, params));
    const char* count = pq_.cmd_tuples(result);
    std::optional<int64_t> n =
        count != nullptr && *count != '\0' ? ParseInteger(count) : std::optional<int64_t>(0);
    bool rows = pq_.ntuples(result) > 0;
    pq_.clear(result);
    if (rows) return InvalidArgumentError(name_ + ": a statement returned rows");
    if (!n.has_value()) return UnavailableError(name_ + ": a count of rows that is not a number");
    return *n;
  }

 private:
  // Runs a prepared statement (prepared now if new); the caller clears the
  // result.
  Result<PGresult*> Run(const std::string& sql, std::span<const Param> params) {
    DeallocateDropped();
    const std::string* statement = nullptr;
    if (auto* entry = prepared_.Find(sql); entry != nullptr) {
      statement = &entry->handle;
    } else {
      std::string name = "meshsync_" + std::to_string(next_statement_++);
      PGresult* result =
          pq_.prepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(params.size()), nullptr);
      Status status = Check(result);
      pq_.clear(result);
      MESHSYNC_RETURN_IF_ERROR(status);
      statement =
          &prepared_
               .Add(sql, std::move(name),
                    [this](std::string& dropped) { dropped_.push_back(std::move(dropped)); })
               .handle;
    }
    std::vector<const char*> values(params.size());
    std::vector<int> lengths(params.size());
    std::vector<int> formats(params.size());
    std::vector<std::string> texts(params.size());  // NUL-terminated copies
    for (size_t i = 0; i < params.size(); ++i) {
      std::string_view v = params[i].value;
      if (IsNull(v)) {
        values[i] = nullptr;
      } else if (IsBlob(v)) {
        std::string_view bytes = Payload(v);
        values[i] = bytes.data();
        lengths[i] = static_cast<int>(bytes.size());
        formats[i] = 1;
      } else if (IsText(v)) {
        texts[i] = std::string(Payload(v));
        if (texts[i].find('\0') != std::string::npos)
          return InvalidArgumentError(name_ + ": text holds a NUL byte, which PostgreSQL refuses");
        values[i] = texts[i].c_str();
      } else {
        return InvalidArgumentError("a value is not encoded (N, b... or v...)");
      }
    }
    PGresult* result = pq_.exec_prepared(conn_, statement->c_str(), static_cast<int>(params.size()),
                                         values.data(), lengths.data(), formats.data(), 0);
    Status status = Check(result);
    if (!status.ok()) {
      pq_.clear(result);
      return status;
    }
    return result;
  }

  Status Check(PGresult* result) {
    ExecStatusType code = pq_.result_status(result);
    if (code == PGRES_COMMAND_OK || code == PGRES_TUPLES_OK) return Status::Ok();
    if (pq_.status(conn_) != CONNECTION_OK)
      return UnavailableError(name_ + ": connection lost: " + pq_.error_message(conn_));
    std::string message =
        result != nullptr ? pq_.result_error_message(result) : pq_.error_message(conn_);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
      message.pop_back();
    const char* state =
        result != nullptr ? pq_.result_error_field(result, PG_DIAG_SQLSTATE) : nullptr;
    std::string sqlstate = state != nullptr ? state : "";
    // Class 40 (rollback: serialization, deadlock) and 55/57 (lock not
    // available, shutdown) are transient; the rest is the data or the schema.
    if (sqlstate.starts_with("40") || sqlstate.starts_with("55") || sqlstate.starts_with("57") ||
        sqlstate.starts_with("08"))
      return UnavailableError(name_ + ": " + message);
    return InvalidArgumentError(name_ + ": " + message);
  }

  Status Read(PGresult* result, int r, int c, std::string& out) const {
    if (pq_.getisnull(result, r, c)) {
      out = kNull;
      return Status::Ok();
    }
    const char* text = pq_.getvalue(result, r, c);
    size_t size = static_cast<size_t>(pq_.getlength(result, r, c));
    switch (pq_.ftype(result, c)) {
      case kBoolOid:
        out = text[0] == 't' ? "v1" : "v0";
        return Status::Ok();
      case kFloat4Oid:
      case kFloat8Oid: {
        std::optional<double> d = ParseReal(std::string_view(text, size));
        if (!d) return DataLossError("PostgreSQL sent a float that does not parse");
        out = "v" + FormatReal(*d);
        return Status::Ok();
      }
      case kByteaOid: {
        // Hex output: \x then two digits per byte.
        if (size < 2 || text[0] != '\\' || text[1] != 'x')
          return DataLossError("PostgreSQL sent bytea that is not in hex form");
        out = "b";
        out.reserve(1 + (size - 2) / 2);
        for (size_t i = 2; i + 1 < size; i += 2) {
          int hi = HexDigit(text[i]);
          int lo = HexDigit(text[i + 1]);
          if (hi < 0 || lo < 0) return DataLossError("PostgreSQL sent malformed bytea");
          out += static_cast<char>(hi * 16 + lo);
        }
        return Status::Ok();
      }
      default:
        out = "v";
        out.append(text, size);
        return Status::Ok();
    }
  }

  // Frees on the server the statements the cache dropped, outside any
  // transaction only: there a failing DEALLOCATE cannot abort the work of
  // others, and whatever fails is left for the session's end.
  void DeallocateDropped() {
    if (dropped_.empty() || pq_.transaction_status(conn_) != PQTRANS_IDLE) return;
    std::string sql;
    for (const std::string& name : dropped_) sql += "DEALLOCATE " + name + ";";
    dropped_.clear();
    pq_.clear(pq_.exec(conn_, sql.c_str()));
  }

  const LibPq& pq_;
  PGconn* conn_;
  std::string name_;
  // Statements run one at a time, their rows read before any callback:
  // nothing in the cache is ever running.
  StatementCache<std::string> prepared_;
  uint64_t next_statement_ = 0;
  std::vector<std::string> dropped_;  // names to DEALLOCATE
};

Result<std::unique_ptr<Connection>> ConnectPostgres(std::string_view url) {
  MESHSYNC_ASSIGN_OR_RETURN(const LibPq* loaded, LoadLibPq());
  const LibPq& pq = *loaded;
  std::string conninfo(url);
  PGconn* conn = pq.connectdb(conninfo.c_str());
  if (conn == nullptr) return UnavailableError("out of memory connecting to PostgreSQL");
  if (pq.status(conn) != CONNECTION_OK) {
    std::string message = pq.error_message(conn);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    pq.finish(conn);
    return UnavailableError("cannot connect to PostgreSQL: " + message);
  }
  std::string name =
      std::string("postgresql://") + pq.host(conn) + ":" + pq.port(conn) + "/" + pq.db(conn);
  auto connection = std::make_unique<PostgresConnection>(pq, conn, std::move(name));
  // Settings that fix the text form of values (value.h).
  MESHSYNC_RETURN_IF_ERROR(connection->Exec(
      "SET client_min_messages = warning; SET DateStyle = ISO; SET TimeZone = 'UTC'; "
      "SET extra_float_digits = 3; SET bytea_output = 'hex'; SET client_encoding = 'UTF8'"));
  return std::unique_ptr<Connection>(std::move(connection));
}

}  // namespace

Result<std::unique_ptr<Connection>> Connect(std::string_view url) {
  if (url.starts_with("sqlite:")) return ConnectSqlite(url);
  if (url.starts_with("postgresql://") || url.starts_with("postgres://"))
    return ConnectPostgres(url);
  return InvalidArgumentError("'" + std::string(url) +
                              "' is not a database URL (sqlite:PATH or postgresql://...)");
}

}  // namespace meshsync::sql
