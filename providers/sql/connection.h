// Connection: the little the relational provider needs from a database,
// implemented for SQLite (the C API) and PostgreSQL (libpq).
//
// Values cross this interface in one encoding, the one every relational
// replica syncs (see value.h): "N" for NULL, "b" + bytes for a blob or bytea,
// "v" + canonical text for everything else. Parameters carry a Kind hint so
// that a connection can bind a number as a number.
//
// Statements are prepared once per connection and cached by their text, the
// kMaxCachedStatements most recently used (CachedStatements).
// Identifiers are always quoted (QuoteIdent), values always bound: nothing a
// user or a peer supplies is spliced into SQL.
//
// Thread-compatible; one connection per provider.
#ifndef MESHSYNC_PROVIDERS_SQL_CONNECTION_H_
#define MESHSYNC_PROVIDERS_SQL_CONNECTION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshsync/status.h"
#include "sql/value.h"

namespace meshsync::sql {

enum class Dialect { kSqlite, kPostgres };

struct Param {
  std::string value;  // encoded (value.h)
  Kind kind = Kind::kText;
};

// The encoded values of one result row, in select-list order.
using Row = std::span<const std::string>;
using RowFn = std::function<Status(Row)>;

// A connection keeps at most this many prepared statements: a table whose
// updates set many different sets of columns (an UPDATE text each) would
// otherwise keep one per set for the connection's life.
inline constexpr size_t kMaxCachedStatements = 256;

class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  virtual ~Connection() = default;

  virtual Dialect dialect() const = 0;
  // How the user named the database, without a password.
  virtual const std::string& name() const = 0;

  // Runs SQL without parameters or results (may hold several statements).
  virtual Status Exec(std::string_view sql) = 0;
  // Runs one statement; calls `fn` for each result row, its values encoded
  // and canonical (value.h) by the type the database reports.
  virtual Status Query(const std::string& sql, std::span<const Param> params, const RowFn& fn) = 0;
  // Runs one INSERT, UPDATE or DELETE that returns no rows; the number of
  // rows it wrote itself (rows its triggers wrote are not counted). For any
  // other statement the count means nothing (SQLite reports the last
  // write's).
  virtual Result<int64_t> Execute(const std::string& sql, std::span<const Param> params) = 0;

  // Whether writing `p` into a column of SQLite affinity `column` stores
  // exactly `p.value`: Query would read it back unchanged, so a write need
  // not read the row back to learn what the database made of it. False
  // wherever that is not certain, and always for PostgreSQL, which parses
  // every value into its column's type.
  virtual bool StoresAsGiven(const Param& p, Affinity column) const {
    (void)p;
    (void)column;
    return false;
  }

  // Prepared statements kept for reuse: at most kMaxCachedStatements, unless
  // more are running at once (a row callback's own queries).
  virtual size_t CachedStatements() const = 0;

  // "$n" for PostgreSQL, "?n" for SQLite: the n-th parameter (from 1).
  std::string Placeholder(size_t n) const;

  // Has this connection's own writes fire none of the database's triggers
  // (SQLite: SQLITE_DBCONFIG_ENABLE_TRIGGER; foreign key actions still
  // run), or all of them again. Returns whether the connection can: false
  // for PostgreSQL, where it needs a superuser.
  virtual bool SetTriggersEnabled(bool enabled) {
    (void)enabled;
    return false;
  }

  // Whether SQL may call meshsync_field_hash(name, value): FieldHashOf(name,
  // the value encoded as Query encodes it), its 64 bits as a signed integer.
  virtual bool HashesFields() const { return false; }
};

// Opens "sqlite:PATH" (the file must exist) or "postgresql://..." /
// "postgres://..." (a libpq connection URI). kInvalidArgument for any other
// form, kUnavailable when the database cannot be reached.
Result<std::unique_ptr<Connection>> Connect(std::string_view url);

// A quoted identifier: "name" with inner quotes doubled. kInvalidArgument for
// an empty name or one holding a NUL byte.
Result<std::string> QuoteIdent(std::string_view name);

// `parts` separated by `sep` (column lists, conditions).
std::string Join(const std::vector<std::string>& parts, std::string_view sep);

// Runs `sql` and returns the first column of the first row, or nullopt.
Result<std::optional<std::string>> QueryValue(Connection& db, const std::string& sql,
                                              std::span<const Param> params = {});

}  // namespace meshsync::sql

#endif  // MESHSYNC_PROVIDERS_SQL_CONNECTION_H_
