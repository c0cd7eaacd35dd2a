// How a column's value travels between relational replicas.
//
// Every value is encoded the same way whichever database it comes from, so a
// SQLite row and a PostgreSQL row with the same data encode to the same bytes
// (and the same per-column hashes):
//
//   "N"             NULL
//   "b" + bytes     a blob (SQLite) or bytea (PostgreSQL)
//   "v" + text      anything else, as canonical text:
//                     integer    decimal ("-42")
//                     real       the shortest text that reads back to the
//                                same double ("0.1", "1e+20", "inf", "nan")
//                     numeric    the decimal text PostgreSQL prints ("1.50")
//                     boolean    "1" or "0"
//                     date       "YYYY-MM-DD"
//                     timestamp  "YYYY-MM-DD HH:MM:SS[.ffffff]"
//                     timestamptz the same in UTC, with "+00"
//                     uuid, json, jsonb, text: their text
//
// Where a database normalises a value on its own (PostgreSQL parses a
// timestamp written as "2024-01-02T03:04:05Z"; SQLite keeps a numeric as a
// REAL), the provider reads back what it stored and, if that differs, gives
// the column a new version with the stored value, so every replica ends with
// the same bytes. Each database's normal form is a fixed point of the other's,
// so this settles after at most two hops.
//
// A column's Kind comes from its declared type (see KindOfSqliteType and
// KindOfPostgresType); two tables sync only when their columns' kinds match.
#ifndef MESHSYNC_PROVIDERS_SQL_VALUE_H_
#define MESHSYNC_PROVIDERS_SQL_VALUE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace meshsync::sql {

enum class Kind {
  kInteger,
  kReal,
  kNumeric,
  kText,
  kBlob,
  kBoolean,
  kDate,
  kTimestamp,
  kTimestampTz,
  kUuid,
  kJson,
  kJsonb,
};

std::string_view KindName(Kind kind);

// SQLite: by the words of the declared type (INTEGER, INT, BIGINT, SMALLINT,
// TINYINT -> integer; REAL, DOUBLE, FLOAT -> real; NUMERIC, DECIMAL ->
// numeric; TEXT, VARCHAR, CHAR, CLOB -> text; BLOB, BYTEA -> blob; BOOLEAN,
// BOOL; DATE; TIMESTAMP, DATETIME; TIMESTAMPTZ; UUID; JSON; JSONB). A length
// or precision in parentheses is ignored. nullopt for anything else,
// including no declared type.
std::optional<Kind> KindOfSqliteType(std::string_view declared);
// SQLite's type affinity of a column, from its declared type by SQLite's
// rules ("Datatypes In SQLite", 3.1): INT -> integer; CHAR, CLOB or TEXT ->
// text; BLOB or no type -> none (kBlob); REAL, FLOA or DOUB -> real; else
// numeric. The affinity decides which values SQLite converts as it stores
// them.
enum class Affinity { kInteger, kText, kBlob, kReal, kNumeric };
Affinity SqliteAffinity(std::string_view declared);
// PostgreSQL: by pg_type.typname (int2, int4, int8, float4, float8, numeric,
// text, varchar, bpchar, bytea, bool, date, timestamp, timestamptz, uuid,
// json, jsonb). nullopt for anything else.
std::optional<Kind> KindOfPostgresType(std::string_view typname);

inline constexpr std::string_view kNull = "N";
inline std::string Blob(std::string_view bytes) { return "b" + std::string(bytes); }
inline std::string Text(std::string_view text) { return "v" + std::string(text); }
inline bool IsNull(std::string_view v) { return v == kNull; }
inline bool IsBlob(std::string_view v) { return !v.empty() && v[0] == 'b'; }
inline bool IsText(std::string_view v) { return !v.empty() && v[0] == 'v'; }
// The payload after the tag.
inline std::string_view Payload(std::string_view v) { return v.empty() ? v : v.substr(1); }
// Whether `v` is a well-formed encoding.
inline bool IsValidValue(std::string_view v) { return IsNull(v) || IsBlob(v) || IsText(v); }

// The canonical text of a double (shortest round trip; "inf", "-inf", "nan").
std::string FormatReal(double d);
// Parses decimal or the special names (any case, also PostgreSQL's
// "Infinity"/"NaN"); nullopt if `text` is not a number.
std::optional<double> ParseReal(std::string_view text);
std::optional<int64_t> ParseInteger(std::string_view text);

}  // namespace meshsync::sql

#endif  // MESHSYNC_PROVIDERS_SQL_VALUE_H_
