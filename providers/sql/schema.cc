#include "sql/schema.h"

#include <algorithm>
#include <map>
#include <set>

#include "meshsync/ids.h"

namespace meshsync::sql {

namespace {

constexpr std::string_view kTableField = "#table";

std::string MillisExpr(Dialect d) {
  return d == Dialect::kSqlite ? "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
                               : "(extract(epoch from clock_timestamp()) * 1000)::bigint";
}

Result<bool> TableExists(Connection& db, std::string_view table) {
  std::string name(table);
  if (db.dialect() == Dialect::kSqlite) {
    Param p{Text(name)};
    MESHSYNC_ASSIGN_OR_RETURN(
        auto v, QueryValue(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                           std::span(&p, 1)));
    return v.has_value();
  }
  MESHSYNC_ASSIGN_OR_RETURN(std::string quoted, QuoteIdent(name));
  Param p{Text(quoted)};
  MESHSYNC_ASSIGN_OR_RETURN(auto v,
                            QueryValue(db, "SELECT to_regclass($1) IS NOT NULL", std::span(&p, 1)));
  return v.has_value() && *v == "v1";
}

// The SQL that drops table N's triggers (the table itself must exist).
Result<std::string> DropTriggersSql(Dialect d, std::string_view table, int n) {
  std::string num = std::to_string(n);
  if (d == Dialect::kSqlite) {
    std::string sql;
    for (std::string_view op : kSqliteTriggerOps)
      sql += "DROP TRIGGER IF EXISTS " + SqliteTrigger(op, n) + ";";
    return sql;
  }
  MESHSYNC_ASSIGN_OR_RETURN(std::string quoted, QuoteIdent(table));
  return "DROP TRIGGER IF EXISTS meshsync_track_" + num + " ON " + quoted +
         "; DROP FUNCTION IF EXISTS meshsync_track_" + num + "();";
}

// The version of the triggers TriggerSql makes, kept in meshsync_scope as
// 'tracking'. 1: every write tracked; 2: a sync's own writes are not
// (meshsync_applying).
constexpr std::string_view kTrackingVersion = "2";

// The statements that create table N's tracking table and triggers, and
// enroll its rows; or, with `triggers_only`, its triggers alone.
Result<std::string> TrackSql(Dialect d, const TableSchema& t, int n, bool triggers_only = false) {
  MESHSYNC_ASSIGN_OR_RETURN(std::string quoted, QuoteIdent(t.name));
  std::string tracking = TrackingTable(n);
  std::string num = std::to_string(n);
  std::vector<std::string> pk_defs, pk_names, old_pk, new_pk;
  for (size_t i : t.pk) {
    MESHSYNC_ASSIGN_OR_RETURN(std::string c, QuoteIdent(t.columns[i].name));
    pk_defs.push_back(c + " " + t.columns[i].declared);
    pk_names.push_back(c);
    old_pk.push_back("OLD." + c);
    new_pk.push_back("NEW." + c);
  }
  std::string pk = Join(pk_names, ", ");
  std::string millis = MillisExpr(d);
  std::string sql;
  if (d == Dialect::kSqlite) {
    if (!triggers_only) {
      sql += "CREATE TABLE " + tracking + "(" + Join(pk_defs, ", ") +
             ", seq INTEGER NOT NULL, changed_millis INTEGER NOT NULL, op TEXT NOT NULL, "
             "PRIMARY KEY(" +
             pk + ")) WITHOUT ROWID;\n";
      sql += "CREATE INDEX " + tracking + "_seq ON " + tracking + "(seq);\n";
    }
    // An unconditional row is inserted from VALUES: INSERT ... SELECT that
    // reads the table it inserts into (max(seq)) goes through a temporary
    // table, a quarter of the cost of each tracked write.
    auto upsert = [&](const std::vector<std::string>& values, std::string_view op,
                      std::string_view where) {
      std::string row = Join(values, ", ") + ", (SELECT coalesce(max(seq), 0) + 1 FROM " +
                        tracking + "), " + millis + ", '" + std::string(op) + "'";
      return "INSERT INTO " + tracking + "(" + pk + ", seq, changed_millis, op) " +
             (where.empty() ? "VALUES (" + row + ")"
                            : "SELECT " + row + " WHERE " + std::string(where)) +
             " ON CONFLICT(" + pk +
             ") DO UPDATE SET seq = excluded.seq, changed_millis = excluded.changed_millis, "
             "op = excluded.op;";
    };
    std::vector<std::string> moved;
    for (size_t i = 0; i < old_pk.size(); ++i) moved.push_back(old_pk[i] + " IS NOT " + new_pk[i]);
    // A sync's own writes are not tracked: its write transaction marks
    // itself active in meshsync_applying, and unmarks itself before it
    // commits, so no other writer ever sees the mark (SQLite has one
    // writer at a time, and readers see only what is committed).
    std::string when = " WHEN NOT EXISTS (SELECT 1 FROM meshsync_applying WHERE active = 1) BEGIN ";
    sql += "CREATE TRIGGER " + SqliteTrigger("insert", n) + " AFTER INSERT ON " + quoted + when +
           upsert(new_pk, "insert", "") + " END;\n";
    sql += "CREATE TRIGGER " + SqliteTrigger("update", n) + " AFTER UPDATE ON " + quoted + when +
           upsert(old_pk, "delete", Join(moved, " OR ")) + " " + upsert(new_pk, "update", "") +
           " END;\n";
    sql += "CREATE TRIGGER " + SqliteTrigger("delete", n) + " AFTER DELETE ON " + quoted + when +
           upsert(old_pk, "delete", "") + " END;\n";
    if (triggers_only) return sql;
    sql += "INSERT INTO " + tracking + "(" + pk + ", seq, changed_millis, op) SELECT " + pk +
           ", (SELECT coalesce(max(seq), 0) + 1 FROM " + tracking + "), " + millis +
           ", 'insert' FROM " + quoted + " WHERE true ON CONFLICT(" + pk +
           ") DO UPDATE SET seq = excluded.seq, changed_millis = excluded.changed_millis, "
           "op = excluded.op;\n";
    return sql;
  }
  // PostgreSQL: one plpgsql function per table. Its body is dollar-quoted
  // with a tag no quoted identifier can end.
  for (const Column& c : t.columns) {
    if (c.name.find("$meshsync$") != std::string::npos)
      return InvalidArgumentError("column name '" + c.name + "' holds $meshsync$");
  }
  if (!triggers_only) {
    sql += "CREATE TABLE " + tracking + "(" + Join(pk_defs, ", ") +
           ", xid xid8 NOT NULL, changed_millis bigint NOT NULL, op text NOT NULL, PRIMARY KEY(" +
           pk + "));\n";
    sql += "CREATE INDEX " + tracking + "_xid ON " + tracking + "(xid);\n";
  }
  auto upsert = [&](const std::vector<std::string>& values) {
    return "INSERT INTO " + tracking + "(" + pk + ", xid, changed_millis, op) VALUES (" +
           Join(values, ", ") + ", pg_current_xact_id(), " + millis +
           ", lower(TG_OP)) ON CONFLICT (" + pk +
           ") DO UPDATE SET xid = excluded.xid, changed_millis = excluded.changed_millis, "
           "op = excluded.op;";
  };
  // A sync's own writes are not tracked: its transaction sets
  // meshsync.applying, which no other session sees (SET LOCAL).
  sql += "CREATE FUNCTION meshsync_track_" + num +
         "() RETURNS trigger LANGUAGE plpgsql AS $meshsync$ BEGIN\n"
         "  IF current_setting('meshsync.applying', true) = 'on' THEN RETURN NULL; END IF;\n"
         "  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ROW(" +
         Join(old_pk, ", ") + ") IS DISTINCT FROM ROW(" + Join(new_pk, ", ") + ")) THEN " +
         upsert(old_pk) + " END IF;\n  IF TG_OP <> 'DELETE' THEN " + upsert(new_pk) +
         " END IF;\n  RETURN NULL;\nEND $meshsync$;\n";
  sql += "CREATE TRIGGER meshsync_track_" + num + " AFTER INSERT OR UPDATE OR DELETE ON " + quoted +
         " FOR EACH ROW EXECUTE FUNCTION meshsync_track_" + num + "();\n";
  if (triggers_only) return sql;
  sql += "INSERT INTO " + tracking + "(" + pk + ", xid, changed_millis, op) SELECT " + pk +
         ", pg_current_xact_id(), " + millis + ", 'insert' FROM " + quoted + ";\n";
  return sql;
}

// meshsync_applying: per replica, a sync's batch in this database. `active`
// while its transaction writes (the triggers skip those writes); a row left
// with active = 0 names a batch committed here whose metadata may not be
// (see TableProvider).
std::string ApplyingTableSql(Dialect d) {
  return d == Dialect::kSqlite ? "CREATE TABLE IF NOT EXISTS meshsync_applying(replica TEXT "
                                 "PRIMARY KEY, active INTEGER NOT NULL) WITHOUT ROWID;\n"
                               : "CREATE TABLE IF NOT EXISTS meshsync_applying(replica text "
                                 "PRIMARY KEY, active integer NOT NULL);\n";
}

std::string SetTrackingVersionSql() {
  return "INSERT INTO meshsync_scope(name, value) VALUES ('tracking', '" +
         std::string(kTrackingVersion) +
         "') ON CONFLICT(name) DO UPDATE SET value = excluded.value;\n";
}

Status InTransaction(Connection& db, const std::function<Status()>& body) {
  MESHSYNC_RETURN_IF_ERROR(db.Exec(db.dialect() == Dialect::kSqlite ? "BEGIN IMMEDIATE" : "BEGIN"));
  Status status = body();
  if (status.ok()) status = db.Exec("COMMIT");
  if (!status.ok()) (void)db.Exec("ROLLBACK");
  return status;
}

}  // namespace

std::string TrackingTable(int number) { return "meshsync_tracking_" + std::to_string(number); }

std::string SqliteTrigger(std::string_view operation, int number) {
  return "meshsync_" + std::string(operation) + "_" + std::to_string(number);
}

std::string TableSchema::Signature() const {
  std::vector<std::string> parts;
  for (const Column& c : columns) {
    std::string part = c.name + " " + std::string(KindName(c.kind));
    if (c.pk > 0) part += " pk" + std::to_string(c.pk);
    parts.push_back(std::move(part));
  }
  std::sort(parts.begin(), parts.end());
  return Join(parts, ", ");
}

Result<TableSchema> DescribeTable(Connection& db, std::string_view table) {
  MESHSYNC_ASSIGN_OR_RETURN(std::string quoted, QuoteIdent(table));
  MESHSYNC_ASSIGN_OR_RETURN(bool exists, TableExists(db, table));
  if (!exists) return NotFoundError(db.name() + " has no table " + quoted);
  TableSchema schema;
  schema.name = std::string(table);
  std::vector<std::string> unknown;
  auto add = [&](std::string name, std::string declared, std::optional<Kind> kind, int pk) {
    if (!kind) {
      unknown.push_back(name + " (" + (declared.empty() ? "no declared type" : declared) + ")");
      kind = Kind::kText;
    }
    schema.columns.push_back(Column{std::move(name), std::move(declared), *kind, pk});
  };
  Status read;
  if (db.dialect() == Dialect::kSqlite) {
    Param p{Text(schema.name)};
    read = db.Query("SELECT name, type, pk FROM pragma_table_info(?1)", std::span(&p, 1),
                    [&](Row row) {
                      std::string declared(Payload(row[1]));
                      add(std::string(Payload(row[0])), declared, KindOfSqliteType(declared),
                          static_cast<int>(ParseInteger(Payload(row[2])).value_or(0)));
                      return Status::Ok();
                    });
  } else {
    Param p{Text(quoted)};
    read = db.Query(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, "
        "coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) "
        "+ 1, 0) "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
        "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        std::span(&p, 1), [&](Row row) {
          add(std::string(Payload(row[0])), std::string(Payload(row[1])),
              KindOfPostgresType(Payload(row[2])),
              static_cast<int>(ParseInteger(Payload(row[3])).value_or(0)));
          return Status::Ok();
        });
  }
  MESHSYNC_RETURN_IF_ERROR(read);
  if (!unknown.empty()) {
    std::string list;
    for (const std::string& u : unknown) list += (list.empty() ? "" : ", ") + u;
    return InvalidArgumentError(
        db.name() + ": table " + quoted + " has columns whose type cannot sync: " + list +
        "; types that can: integer, real, numeric, text, blob/bytea, boolean, date, timestamp, "
        "timestamptz, uuid, json, jsonb");
  }
  std::map<ChangeUnitId, std::string> units{{ChangeUnitIdFromName(kTableField), "#table"}};
  for (size_t i = 0; i < schema.columns.size(); ++i) {
    const Column& c = schema.columns[i];
    if (c.pk > 0) schema.pk.push_back(i);
    if (c.name.find('\0') != std::string::npos)
      return InvalidArgumentError("a column name of " + quoted + " holds a NUL byte");
    auto [it, fresh] = units.emplace(ChangeUnitIdFromName(c.name), c.name);
    if (!fresh) {
      return InvalidArgumentError(db.name() + ": table " + quoted + ": column name '" + c.name +
                                  "' " +
                                  (it->second == "#table" ? "is reserved by meshsync"
                                                          : "hashes like '" + it->second + "'") +
                                  "; rename it to sync this table");
    }
  }
  if (schema.pk.empty()) {
    return InvalidArgumentError(db.name() + ": table " + quoted +
                                " has no primary key; meshsync syncs rows by their primary key");
  }
  std::sort(schema.pk.begin(), schema.pk.end(),
            [&](size_t a, size_t b) { return schema.columns[a].pk < schema.columns[b].pk; });
  return schema;
}

Result<std::vector<EnrolledTable>> ListEnrolled(Connection& db) {
  MESHSYNC_ASSIGN_OR_RETURN(bool provisioned, TableExists(db, "meshsync_tables"));
  std::vector<EnrolledTable> out;
  if (!provisioned) return out;
  MESHSYNC_RETURN_IF_ERROR(db.Query(
      "SELECT name, number, signature FROM meshsync_tables ORDER BY name", {}, [&](Row row) {
        out.push_back(EnrolledTable{std::string(Payload(row[0])),
                                    static_cast<int>(ParseInteger(Payload(row[1])).value_or(0)),
                                    std::string(Payload(row[2]))});
        return Status::Ok();
      }));
  return out;
}

Result<std::string> DatabaseId(Connection& db) {
  MESHSYNC_ASSIGN_OR_RETURN(bool provisioned, TableExists(db, "meshsync_scope"));
  if (!provisioned) {
    return FailedPreconditionError(db.name() +
                                   " is not provisioned; run 'meshsync db provision URL TABLE...'");
  }
  MESHSYNC_ASSIGN_OR_RETURN(auto id,
                            QueryValue(db, "SELECT value FROM meshsync_scope WHERE name = 'id'"));
  if (!id || !IsText(*id)) return DataLossError(db.name() + ": meshsync_scope has no id");
  return std::string(Payload(*id));
}

Status Provision(Connection& db, std::span<const std::string> tables) {
  if (tables.empty()) return InvalidArgumentError("name at least one table to provision");
  std::vector<TableSchema> schemas;
  std::set<std::string> seen;
  for (const std::string& name : tables) {
    if (name.starts_with("meshsync_"))
      return InvalidArgumentError("'" + name + "' is one of meshsync's own tables");
    if (!seen.insert(name).second) continue;
    MESHSYNC_ASSIGN_OR_RETURN(TableSchema schema, DescribeTable(db, name));
    schemas.push_back(std::move(schema));
  }
  // Tables enrolled earlier get the current triggers too.
  MESHSYNC_RETURN_IF_ERROR(UpgradeTracking(db));
  Dialect d = db.dialect();
  return InTransaction(db, [&]() -> Status {
    const char* text = d == Dialect::kSqlite ? "TEXT" : "text";
    MESHSYNC_RETURN_IF_ERROR(
        db.Exec(std::string("CREATE TABLE IF NOT EXISTS meshsync_scope(name ") + text +
                " PRIMARY KEY, value " + text +
                " NOT NULL);\n"
                "CREATE TABLE IF NOT EXISTS meshsync_tables(name " +
                text + " PRIMARY KEY, number " + (d == Dialect::kSqlite ? "INTEGER" : "integer") +
                " NOT NULL UNIQUE, signature " + text +
                " NOT NULL);\n"
                "CREATE TABLE IF NOT EXISTS meshsync_anchors(replica " +
                text + " NOT NULL, tbl " + text + " NOT NULL, anchor " + text +
                " NOT NULL, PRIMARY KEY(replica, tbl));\n" + ApplyingTableSql(d) +
                "INSERT INTO meshsync_scope(name, value) VALUES ('id', " +
                (d == Dialect::kSqlite ? "lower(hex(randomblob(16)))"
                                       : "md5(random()::text || clock_timestamp()::text)") +
                ") ON CONFLICT(name) DO NOTHING;\n" + SetTrackingVersionSql()));
    for (const TableSchema& schema : schemas) {
      Param name{Text(schema.name)};
      MESHSYNC_ASSIGN_OR_RETURN(
          auto existing,
          QueryValue(db, "SELECT number FROM meshsync_tables WHERE name = " + db.Placeholder(1),
                     std::span(&name, 1)));
      int number = 0;
      if (existing) {
        number = static_cast<int>(ParseInteger(Payload(*existing)).value_or(0));
        MESHSYNC_ASSIGN_OR_RETURN(std::string drop, DropTriggersSql(d, schema.name, number));
        MESHSYNC_RETURN_IF_ERROR(db.Exec(drop + " DROP TABLE IF EXISTS " + TrackingTable(number)));
      } else {
        MESHSYNC_ASSIGN_OR_RETURN(
            auto max, QueryValue(db, "SELECT coalesce(max(number), 0) + 1 FROM meshsync_tables"));
        number = static_cast<int>(ParseInteger(Payload(max.value_or("v1"))).value_or(1));
      }
      MESHSYNC_ASSIGN_OR_RETURN(std::string track, TrackSql(d, schema, number));
      MESHSYNC_RETURN_IF_ERROR(db.Exec(track));
      std::string signature = schema.Signature();
      std::string num = std::to_string(number);
      Param params[] = {{Text(schema.name)}, {Text(num), Kind::kInteger}, {Text(signature)}};
      MESHSYNC_RETURN_IF_ERROR(
          db.Query("INSERT INTO meshsync_tables(name, number, signature) VALUES (" +
                       db.Placeholder(1) + ", " + db.Placeholder(2) +
                       (d == Dialect::kPostgres ? "::integer" : "") + ", " + db.Placeholder(3) +
                       ") ON CONFLICT(name) DO UPDATE SET signature = excluded.signature",
                   params, [](Row) { return Status::Ok(); }));
      MESHSYNC_RETURN_IF_ERROR(
          db.Query("DELETE FROM meshsync_anchors WHERE tbl = " + db.Placeholder(1),
                   std::span(&name, 1), [](Row) { return Status::Ok(); }));
    }
    return Status::Ok();
  });
}

Status Deprovision(Connection& db, std::span<const std::string> tables) {
  MESHSYNC_ASSIGN_OR_RETURN(std::vector<EnrolledTable> enrolled, ListEnrolled(db));
  if (enrolled.empty()) return FailedPreconditionError(db.name() + " is not provisioned");
  std::vector<EnrolledTable> drop;
  std::set<std::string> named;
  for (const std::string& name : tables) {
    if (!named.insert(name).second) continue;
    auto it = std::find_if(enrolled.begin(), enrolled.end(),
                           [&](const EnrolledTable& e) { return e.name == name; });
    if (it == enrolled.end())
      return NotFoundError("table '" + name + "' is not provisioned in " + db.name());
    drop.push_back(*it);
  }
  if (tables.empty()) drop = enrolled;
  bool all = drop.size() == enrolled.size();
  return InTransaction(db, [&]() -> Status {
    for (const EnrolledTable& t : drop) {
      MESHSYNC_ASSIGN_OR_RETURN(bool exists, TableExists(db, t.name));
      if (exists) {
        MESHSYNC_ASSIGN_OR_RETURN(std::string sql, DropTriggersSql(db.dialect(), t.name, t.number));
        MESHSYNC_RETURN_IF_ERROR(db.Exec(sql));
      }
      MESHSYNC_RETURN_IF_ERROR(db.Exec("DROP TABLE IF EXISTS " + TrackingTable(t.number)));
      Param name{Text(t.name)};
      for (const char* table : {"meshsync_tables WHERE name", "meshsync_anchors WHERE tbl"}) {
        MESHSYNC_RETURN_IF_ERROR(
            db.Query(std::string("DELETE FROM ") + table + " = " + db.Placeholder(1),
                     std::span(&name, 1), [](Row) { return Status::Ok(); }));
      }
    }
    if (all) {
      MESHSYNC_RETURN_IF_ERROR(
          db.Exec("DROP TABLE meshsync_tables; DROP TABLE meshsync_anchors; DROP TABLE "
                  "meshsync_scope; DROP TABLE IF EXISTS meshsync_applying;"));
    }
    return Status::Ok();
  });
}

Status UpgradeTracking(Connection& db) {
  MESHSYNC_ASSIGN_OR_RETURN(bool provisioned, TableExists(db, "meshsync_scope"));
  if (!provisioned) return Status::Ok();
  MESHSYNC_ASSIGN_OR_RETURN(
      auto version, QueryValue(db, "SELECT value FROM meshsync_scope WHERE name = 'tracking'"));
  if (version && Payload(*version) == kTrackingVersion) return Status::Ok();
  return InTransaction(db, [&]() -> Status {
    // Another process may have upgraded it since: checked again under the
    // write lock.
    MESHSYNC_ASSIGN_OR_RETURN(
        auto again, QueryValue(db, "SELECT value FROM meshsync_scope WHERE name = 'tracking'"));
    if (again && Payload(*again) == kTrackingVersion) return Status::Ok();
    MESHSYNC_RETURN_IF_ERROR(db.Exec(ApplyingTableSql(db.dialect())));
    MESHSYNC_ASSIGN_OR_RETURN(std::vector<EnrolledTable> enrolled, ListEnrolled(db));
    for (const EnrolledTable& e : enrolled) {
      // A table that changed since it was enrolled keeps its triggers until
      // it is provisioned again (syncing it is refused until then).
      Result<TableSchema> schema = DescribeTable(db, e.name);
      if (!schema.ok() || schema->Signature() != e.signature) continue;
      MESHSYNC_ASSIGN_OR_RETURN(std::string drop, DropTriggersSql(db.dialect(), e.name, e.number));
      MESHSYNC_ASSIGN_OR_RETURN(std::string track,
                                TrackSql(db.dialect(), *schema, e.number, /*triggers_only=*/true));
      MESHSYNC_RETURN_IF_ERROR(db.Exec(drop + "\n" + track));
    }
    return db.Exec(SetTrackingVersionSql());
  });
}

Status CheckCompatible(const TableSchema& a, std::string_view a_name, const TableSchema& b,
                       std::string_view b_name) {
  std::map<std::string, const Column*> in_b;
  for (const Column& c : b.columns) in_b[c.name] = &c;
  std::vector<std::string> problems;
  for (const Column& c : a.columns) {
    auto it = in_b.find(c.name);
    if (it == in_b.end()) {
      problems.push_back("column " + c.name + " is only in " + std::string(a_name));
      continue;
    }
    const Column& o = *it->second;
    if (c.kind != o.kind) {
      problems.push_back("column " + c.name + " is " + c.declared + " (" +
                         std::string(KindName(c.kind)) + ") in " + std::string(a_name) + " but " +
                         o.declared + " (" + std::string(KindName(o.kind)) + ") in " +
                         std::string(b_name));
    }
    if (c.pk != o.pk) problems.push_back("column " + c.name + " is keyed differently");
    in_b.erase(it);
  }
  for (const auto& [name, column] : in_b)
    problems.push_back("column " + name + " is only in " + std::string(b_name));
  if (problems.empty()) return Status::Ok();
  std::string list;
  for (const std::string& p : problems) list += (list.empty() ? "" : "; ") + p;
  return FailedPreconditionError("table " + a.name + " differs between " + std::string(a_name) +
                                 " and " + std::string(b_name) + ": " + list);
}

}  // namespace meshsync::sql
