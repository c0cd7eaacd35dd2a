// TableProvider: the enrolled tables of one database (SQLite or PostgreSQL)
// as one replica. Each row is an item; each column is a change unit, so
// concurrent edits of different columns of a row merge and edits of the same
// column conflict.
//
//   item id   derived from the table and the primary key's values (SHA-256),
//             so the same key inserted on two replicas is one item whose
//             columns merge, not two rows
//   key       table|pk1|pk2... (escaped), to find the row again
//   units     one per column: EncodeField(column, value) (record.h), the
//             value encoded as value.h says; and "#table", the table's name,
//             so a replica that has never seen the row knows where it goes
//   state     the hash of each unit's data when last scanned or written
//
// Change detection reads the tracking rows that the triggers wrote since the
// replica's anchor (schema.h), compares each tracked row with its saved
// hashes, and advances the anchor once the engine has committed what it
// found (ChangesRecorded). The provider's own writes are not tracked (the
// triggers skip a transaction marked in meshsync_applying; on SQLite, where
// they are the only triggers, its connection turns triggers off instead), so
// no scan reads back what a sync wrote. That mark stays behind once the batch commits,
// until the engine has committed the batch's metadata too: a crash in
// between leaves it, and the next scan then compares every row of every
// table with its metadata (ResyncTable), so that rows the metadata does not
// describe turn into local changes, as the Provider contract has it.
//
// Writes happen in one transaction per batch (CommitChanges commits it);
// SaveChanges applies a batch in key order, new rows several per INSERT, in
// savepoints of 256 rows, and a group with a failing row is applied again a
// row at a time, each in a savepoint, so that a failing row leaves no trace. A row that
// the application changed since the last scan is never overwritten or
// deleted: SaveChange refuses it (kUnavailable) and the next scan turns the
// application's edit into a version of its own, which then meets the remote
// one as a proper conflict.
//
// Built against the public headers only. Thread-compatible.
#ifndef MESHSYNC_PROVIDERS_SQL_TABLE_PROVIDER_H_
#define MESHSYNC_PROVIDERS_SQL_TABLE_PROVIDER_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshsync/provider.h"
#include "meshsync/record.h"
#include "sql/connection.h"
#include "sql/row_cache.h"
#include "sql/schema.h"

namespace meshsync::sql {

// The item id of the row of `table` whose primary key values (encoded,
// value.h) are `pk`: for a key that is one integer, the high half names the
// table and the low half is the integer, so ids follow the key's order; for
// any other key, the first 128 bits of a SHA-256 of the table and the key.
// A derived id that happens to be taken by another row is replaced with a
// random one (see DetectChanges), so the two forms never mix up rows.
ItemId RowItemId(std::string_view table, std::span<const std::string> pk);
// The same, with TableIdPrefix(table) computed once per table.
ItemId RowItemId(uint64_t table_prefix, std::string_view table, std::span<const std::string> pk);
uint64_t TableIdPrefix(std::string_view table);

class TableProvider final : public Provider {
 public:
  static constexpr std::string_view kName = "sql-tables";

  // `tables` are enrolled in `db` (schema.h); `anchor_owner` names this
  // replica in meshsync_anchors (its replica id). `db` must outlive the
  // provider. Fails if a table's live schema differs from the enrolled one.
  static Result<std::unique_ptr<TableProvider>> Open(Connection& db,
                                                     std::span<const EnrolledTable> tables,
                                                     std::string anchor_owner);
  ~TableProvider() override;

  const std::vector<TableSchema>& schemas() const { return schemas_; }
  // Tracking rows read by change detection since the provider was opened.
  uint64_t rows_scanned() const { return rows_scanned_; }
  // "table (k1, k2)" for an item's key, for messages and the conflict log.
  static std::string DescribeKey(std::string_view key);

  // ---- Provider ----
  std::string_view Name() const override { return kName; }
  Status DetectChanges(ChangeRecorder& recorder) override;
  Status ChangesRecorded() override;
  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override;
  Result<SaveResult> SaveChange(const SaveRequest& request) override;
  void SaveChanges(std::span<const SaveRequest> requests,
                   std::vector<Result<SaveResult>>& results) override;
  Status CommitChanges() override;
  // Each replica has a connection of its own.
  bool CommitsInBackground() const override { return true; }
  Status ChangesCommitted() override;

 private:
  struct Table;
  TableProvider(Connection& db, std::string anchor_owner);

  Result<const Table*> TableOf(std::string_view name) const;
  // The row's values (all columns, table order), or nullopt if it is gone.
  Result<std::optional<std::vector<std::string>>> ReadRow(const Table& t,
                                                          std::span<const std::string> pk,
                                                          bool for_update);
  // Reads `t`'s tracking rows past the anchor, or with `resync` compares
  // every row (ResyncTable).
  Status DetectTable(const Table& t, bool resync, ChangeRecorder& recorder);
  Status ResyncTable(const Table& t, ChangeRecorder& recorder);
  // Records the change of the row of `t` keyed `pk`, whose columns are now
  // `values` (table order), or which is gone if `values` is empty.
  Status DetectRow(const Table& t, std::span<const std::string> pk, Row values,
                   ChangeRecorder& recorder);

  // The row a save request is about.
  struct Target {
    const Table* table = nullptr;
    std::vector<std::string> pk;  // encoded key values
    std::string key;
    // Column, value (a view of the request's unit data); column order.
    std::vector<std::pair<size_t, std::string_view>> given;
  };
  Result<Target> Resolve(const SaveRequest& request) const;
  Status BeginBatch();
  Status SkipTriggersIfOnlyOurs();
  Status Run(const char* sql);
  // Saves in a savepoint of its own, so that a failure leaves no trace.
  Result<SaveResult> SaveAlone(const SaveRequest& request, const Target& target);
  Result<std::optional<std::vector<std::string>>> Update(const Table& t, const Target& target,
                                                         const FieldHashes& guard);
  Result<SaveResult> Save(const SaveRequest& request, const Target& target);
  // Rows of one INSERT statement, at most this many values.
  static constexpr size_t kMaxInsertParams = 2000;
  Status InsertRows(const Table& t, std::span<const Target* const> rows,
                    std::vector<std::optional<Result<SaveResult>>>& out);
  SaveResult Saved(const Target& target, Row stored, FieldHashes state) const;
  // INSERT ... ON CONFLICT DO NOTHING for `rows` new rows of `t` with every
  // column, RETURNING them if `returning`; built once per form.
  const std::string& InsertSql(const Table& t, size_t rows, bool returning) const;
  // The error of a new row that the table already holds.
  static Status AddedHere(std::string_view key);

  Connection& db_;
  std::string anchor_owner_;
  std::vector<TableSchema> schemas_;
  std::vector<std::unique_ptr<Table>> tables_;
  std::map<std::string, size_t, std::less<>> by_name_;
  // Anchors read up to by the last DetectChanges, saved by ChangesRecorded.
  std::map<std::string, std::string> pending_anchors_;
  // The rows the last DetectChanges read, by key, with the provider_state
  // their values hash to: LoadChangeData serves an item from here while its
  // metadata still names that state (the values of exactly that version),
  // instead of a query per row. Bounded; SaveChange drops what it rewrites.
  RowCache rows_;
  std::vector<std::string_view> loaded_row_;  // LoadChangeData's, reused
  uint64_t rows_scanned_ = 0;
  bool in_transaction_ = false;
  // The batch this replica last wrote (BeginBatch): `committed_` once
  // CommitChanges committed it, `applied_` once its metadata is committed
  // too (ChangesCommitted), so that its meshsync_applying row names nothing
  // unknown; `clear_applying_` if the last scan found that row, for
  // ChangesRecorded to remove.
  bool committed_ = false;
  bool applied_ = false;
  bool clear_applying_ = false;
  // The connection's writes fire no triggers (SkipTriggersIfOnlyOurs).
  bool triggers_skipped_ = false;
  Status ClearApplyingRow();
  Status ClearApplying();
  // This replica's anchor for `table`, if it has one.
  Result<std::optional<std::string>> ReadAnchor(std::string_view table);
  // PostgreSQL: the oldest transaction still running (pg_snapshot_xmin).
  Result<uint64_t> SnapshotXmin();
};

}  // namespace meshsync::sql

#endif  // MESHSYNC_PROVIDERS_SQL_TABLE_PROVIDER_H_
