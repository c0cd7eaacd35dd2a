// Tables, as the relational provider sees them, and provisioning: what
// `meshsync db provision` adds to a database so that its changes are tracked.
//
// Provisioning a table adds, next to it and without touching it:
//   meshsync_tracking_N   one row per primary key ever changed: the key's
//                         columns, a sequence (SQLite: a counter; PostgreSQL:
//                         the writing transaction's id), when, and how
//                         (insert, update, delete)
//   triggers              after insert, update and delete, which upsert the
//                         row's tracking entry (an update that changes the
//                         primary key tracks the old key and the new one);
//                         a sync's own writes are not tracked
// and, once per database:
//   meshsync_scope        the database's sync id (random, made once), and
//                         the version of the triggers ('tracking')
//   meshsync_tables       the enrolled tables: number N and the column
//                         signature they were enrolled with
//   meshsync_anchors      per replica and table, how far its tracking was read
//   meshsync_applying     per replica, the batch it is writing or has
//                         written (TableProvider): marked active while its
//                         transaction runs, which the triggers check
// Existing rows are enrolled as inserts. Which columns of a tracked row
// changed is found by comparing each column with the hash saved at the last
// scan (the provider's state), which also makes a write made during a sync
// harmless: the comparison, not the trigger, decides.
#ifndef MESHSYNC_PROVIDERS_SQL_SCHEMA_H_
#define MESHSYNC_PROVIDERS_SQL_SCHEMA_H_

#include <array>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshsync/status.h"
#include "sql/connection.h"
#include "sql/value.h"

namespace meshsync::sql {

struct Column {
  std::string name;
  std::string declared;  // the declared type, as the database spells it
  Kind kind = Kind::kText;
  int pk = 0;  // position in the primary key, from 1; 0 if not in it
};

struct TableSchema {
  std::string name;
  std::vector<Column> columns;  // in table order
  std::vector<size_t> pk;       // indexes into columns, in key order

  // "name kind [pkN]" per column, in name order: what must match between
  // two replicas and between enrolment and sync.
  std::string Signature() const;
};

// Reads a table's columns and primary key. kNotFound if there is no such
// table; kInvalidArgument if it has no primary key, a column whose type
// cannot sync (naming it and the types that can), or a column named like
// the provider's own fields ("#table").
Result<TableSchema> DescribeTable(Connection& db, std::string_view table);

struct EnrolledTable {
  std::string name;
  int number = 0;         // N in meshsync_tracking_N
  std::string signature;  // TableSchema::Signature() when enrolled
};

// The enrolled tables, by name; empty if the database was never provisioned.
Result<std::vector<EnrolledTable>> ListEnrolled(Connection& db);
// The database's sync id; kFailedPrecondition if it was never provisioned.
Result<std::string> DatabaseId(Connection& db);

// Enrolls `tables` (again, if they are already: the triggers are remade, the
// signature updated and every row re-enrolled), in one transaction. Checks
// every table first; nothing is written if one fails.
Status Provision(Connection& db, std::span<const std::string> tables);
// Removes the tracking of `tables` (all enrolled ones if empty), and the
// per-database tables once none is left. One transaction.
Status Deprovision(Connection& db, std::span<const std::string> tables);

// Remakes the triggers of a database provisioned by an earlier version
// (which tracked a sync's own writes too), once; nothing to do if it is
// current or not provisioned. One transaction.
Status UpgradeTracking(Connection& db);

// Whether two replicas' tables can sync: the same column names, kinds and
// primary key. The error names every difference.
Status CheckCompatible(const TableSchema& a, std::string_view a_name, const TableSchema& b,
                       std::string_view b_name);

// The name of a tracking table.
std::string TrackingTable(int number);

// On SQLite, a tracked table has a trigger for each of these operations,
// named SqliteTrigger(operation, number).
inline constexpr std::array<std::string_view, 3> kSqliteTriggerOps = {"insert", "update", "delete"};
std::string SqliteTrigger(std::string_view operation, int number);

}  // namespace meshsync::sql

#endif  // MESHSYNC_PROVIDERS_SQL_SCHEMA_H_
