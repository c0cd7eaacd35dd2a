#include "sql/table_provider.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "meshsync/record.h"

namespace meshsync::sql {

namespace {

constexpr std::string_view kTableField = "#table";
const ChangeUnitId kTableUnit = ChangeUnitIdFromName(kTableField);
// How much row data DetectChanges keeps for LoadChangeData.
constexpr size_t kRowCacheBytes = size_t{256} << 20;

void AppendEscaped(std::string& out, std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '%' || c == '|' || u < 0x20 || u == 0x7f) {
      std::array<char, 4> buf;
      std::snprintf(buf.data(), buf.size(), "%%%02X", u);
      out += buf.data();
    } else {
      out += c;
    }
  }
}

std::string MakeKey(std::string_view table, std::span<const std::string> pk) {
  std::string key;
  AppendEscaped(key, table);
  for (const std::string& v : pk) {
    key += '|';
    AppendEscaped(key, v);
  }
  return key;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Splits a key into the table's name and the encoded key values. A key is
// read from metadata, so a malformed escape is kept as it is rather than
// trusted; the row it names then simply does not match.
std::vector<std::string> SplitKey(std::string_view key) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < key.size(); ++i) {
    char c = key[i];
    int hi = c == '%' && i + 2 < key.size() ? HexValue(key[i + 1]) : -1;
    int lo = hi >= 0 ? HexValue(key[i + 2]) : -1;
    if (c == '|') {
      parts.emplace_back();
    } else if (lo >= 0) {
      parts.back() += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

// The table's name in a key, as SplitKey reads it: the part before the
// first '|', unescaped.
std::string KeyTable(std::string_view key) {
  std::string_view table = key.substr(0, key.find('|'));
  if (table.find('%') == std::string_view::npos) return std::string(table);
  return SplitKey(table)[0];
}

uint64_t UnitHash(std::string_view name, std::string_view value) {
  return FieldHashOf(name, value);
}

}  // namespace

namespace {

std::array<unsigned char, EVP_MAX_MD_SIZE> Sha256(std::string_view input) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest;
  unsigned int size = 0;
  EVP_Digest(input.data(), input.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return digest;
}

uint64_t Word(const unsigned char* bytes) {
  uint64_t word = 0;
  for (int i = 0; i < 8; ++i) word = (word << 8) | bytes[i];
  return word;
}

// A key that is one integer in canonical decimal ("v-42", not "v042").
std::optional<int64_t> IntegerKey(std::span<const std::string> pk) {
  if (pk.size() != 1 || !IsText(pk[0])) return std::nullopt;
  std::string_view text = Payload(pk[0]);
  std::optional<int64_t> n = ParseInteger(text);
  if (!n || std::to_string(*n) != text) return std::nullopt;
  return n;
}

std::optional<uint64_t> ParseXid(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// A PostgreSQL anchor: the transaction id the next scan reads from. Anchors
// written by earlier versions may list transaction ids after it ("FROM
// OWN,OWN,..."), which are no longer needed: any other text reads as from 0.
uint64_t ParsePgAnchor(std::string_view text) {
  return ParseXid(text.substr(0, text.find(' '))).value_or(0);
}

}  // namespace

uint64_t TableIdPrefix(std::string_view table) {
  std::string input = "meshsync/sql-table";
  input += '\0';
  AppendEscaped(input, table);
  return Word(Sha256(input).data());
}

ItemId RowItemId(uint64_t table_prefix, std::string_view table, std::span<const std::string> pk) {
  if (std::optional<int64_t> n = IntegerKey(pk)) {
    // In key order, so that rows written in key order are items written in
    // id order, and the other way round: the metadata store's pages and the
    // table's fill in sequence instead of one random page per row.
    return ItemId(table_prefix, static_cast<uint64_t>(*n) ^ (uint64_t{1} << 63));
  }
  std::string input = "meshsync/sql-row";
  input += '\0';
  input += MakeKey(table, pk);
  auto digest = Sha256(input);
  return ItemId(Word(digest.data()), Word(digest.data() + 8));
}

ItemId RowItemId(std::string_view table, std::span<const std::string> pk) {
  return RowItemId(TableIdPrefix(table), table, pk);
}

struct TableProvider::Table {
  TableSchema schema;
  int number = 0;
  std::vector<std::string> quoted;   // quoted column names, table order
  std::vector<ChangeUnitId> units;   // unit of each column
  std::vector<Affinity> affinities;  // of each column, on SQLite (StoresAsGiven)
  std::map<std::string, size_t, std::less<>> column_by_name;
  std::string quoted_table;
  uint64_t id_prefix = 0;  // TableIdPrefix of the table's name
  std::string select_sql;  // all columns of one row by key
  std::string delete_sql;
  // New rows with every column, by the number of rows and whether they
  // are returned (InsertSql).
  mutable std::map<std::pair<size_t, bool>, std::string> insert_sql;
  // UPDATEs by the columns they set and guard (Update), one byte of flags
  // per column: 1 set, 2 guarded.
  mutable std::unordered_map<std::string, std::string> update_sql;
  std::string detect_sql;
  std::string all_rows_sql;  // every row, every column (ResyncTable)
  std::string pk_where;      // "pk1 = ?1 AND ..." (parameters 1..k)

  std::vector<Param> PkParams(std::span<const std::string> pk) const {
    std::vector<Param> params;
    for (size_t i = 0; i < schema.pk.size(); ++i)
      params.push_back(Param{pk[i], schema.columns[schema.pk[i]].kind});
    return params;
  }
};

TableProvider::TableProvider(Connection& db, std::string anchor_owner)
    : db_(db), anchor_owner_(std::move(anchor_owner)), rows_(kRowCacheBytes) {}

TableProvider::~TableProvider() {
  if (in_transaction_) (void)db_.Exec("ROLLBACK");
  // Nothing is in flight any more (a failure leaves a resync to the next
  // scan).
  if (applied_) (void)ClearApplying();
}

Result<std::unique_ptr<TableProvider>> TableProvider::Open(Connection& db,
                                                           std::span<const EnrolledTable> tables,
                                                           std::string anchor_owner) {
  std::unique_ptr<TableProvider> p(new TableProvider(db, std::move(anchor_owner)));
  bool pg = db.dialect() == Dialect::kPostgres;
  MESHSYNC_RETURN_IF_ERROR(UpgradeTracking(db));
  for (const EnrolledTable& enrolled : tables) {
    MESHSYNC_ASSIGN_OR_RETURN(TableSchema schema, DescribeTable(db, enrolled.name));
    if (schema.Signature() != enrolled.signature) {
      return FailedPreconditionError(
          db.name() + ": table " + enrolled.name +
          " changed since it was provisioned (now: " + schema.Signature() +
          "; then: " + enrolled.signature + "); run 'meshsync db provision' for it again");
    }
    auto t = std::make_unique<Table>();
    t->number = enrolled.number;
    t->id_prefix = TableIdPrefix(enrolled.name);
    MESHSYNC_ASSIGN_OR_RETURN(t->quoted_table, QuoteIdent(schema.name));
    for (size_t i = 0; i < schema.columns.size(); ++i) {
      MESHSYNC_ASSIGN_OR_RETURN(std::string q, QuoteIdent(schema.columns[i].name));
      t->quoted.push_back(q);
      t->units.push_back(ChangeUnitIdFromName(schema.columns[i].name));
      t->affinities.push_back(SqliteAffinity(schema.columns[i].declared));
      t->column_by_name.emplace(schema.columns[i].name, i);
    }
    std::vector<std::string> where, join, tracked_pk, selected;
    for (size_t k = 0; k < schema.pk.size(); ++k) {
      const std::string& c = t->quoted[schema.pk[k]];
      where.push_back(c + " = " + db.Placeholder(k + 1));
      join.push_back("t." + c + " = tr." + c);
      tracked_pk.push_back("tr." + c);
    }
    for (const std::string& c : t->quoted) selected.push_back("t." + c);
    t->pk_where = Join(where, " AND ");
    std::string columns = Join(t->quoted, ", ");
    t->select_sql = "SELECT " + columns + " FROM " + t->quoted_table + " WHERE " + t->pk_where;
    t->delete_sql = "DELETE FROM " + t->quoted_table + " WHERE " + t->pk_where;
    std::string tracking = TrackingTable(enrolled.number);
    t->detect_sql = "SELECT " + std::string(pg ? "tr.xid::text" : "tr.seq") + ", " +
                    Join(selected, ", ") + ", t." + t->quoted[schema.pk[0]] + " IS NOT NULL, " +
                    Join(tracked_pk, ", ") + " FROM " + tracking + " AS tr LEFT JOIN " +
                    t->quoted_table + " AS t ON " + Join(join, " AND ") + " WHERE " +
                    (pg ? "tr.xid >= $1::xid8" : "tr.seq > ?1");
    t->all_rows_sql = "SELECT " + columns + " FROM " + t->quoted_table;
    t->schema = schema;
    p->by_name_.emplace(schema.name, p->tables_.size());
    p->schemas_.push_back(std::move(schema));
    p->tables_.push_back(std::move(t));
  }
  return p;
}

std::string TableProvider::DescribeKey(std::string_view key) {
  std::vector<std::string> parts = SplitKey(key);
  std::string out = parts[0] + " (";
  for (size_t i = 1; i < parts.size(); ++i) {
    if (i > 1) out += ", ";
    out += IsNull(parts[i]) ? "NULL" : std::string(Payload(parts[i]));
  }
  return out + ")";
}

Result<const TableProvider::Table*> TableProvider::TableOf(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return NotFoundError("table " + std::string(name) + " is not synced by " + db_.name() +
                         " (provision it there, or leave it out of --tables)");
  }
  return tables_[it->second].get();
}

Result<std::optional<std::vector<std::string>>> TableProvider::ReadRow(
    const Table& t, std::span<const std::string> pk, bool for_update) {
  std::vector<Param> params = t.PkParams(pk);
  std::optional<std::vector<std::string>> row;
  std::string sql = t.select_sql;
  if (for_update && db_.dialect() == Dialect::kPostgres) sql += " FOR UPDATE";
  MESHSYNC_RETURN_IF_ERROR(db_.Query(sql, params, [&row](Row r) {
    row.emplace(r.begin(), r.end());
    return Status::Ok();
  }));
  return row;
}

Status TableProvider::DetectChanges(ChangeRecorder& recorder) {
  pending_anchors_.clear();
  rows_.Clear();
  // A batch this provider did not see through to its metadata commit: its
  // rows were written untracked, so every row is compared instead.
  Param owner{Text(anchor_owner_)};
  MESHSYNC_ASSIGN_OR_RETURN(
      auto applying,
      QueryValue(db_, "SELECT 1 FROM meshsync_applying WHERE replica = " + db_.Placeholder(1),
                 std::span(&owner, 1)));
  clear_applying_ = applying.has_value();
  bool resync = applying.has_value() && !applied_;
  for (const auto& t : tables_) MESHSYNC_RETURN_IF_ERROR(DetectTable(*t, resync, recorder));
  return Status::Ok();
}

Status TableProvider::DetectTable(const Table& t, bool resync, ChangeRecorder& recorder) {
  const TableSchema& schema = t.schema;
  bool pg = db_.dialect() == Dialect::kPostgres;
  MESHSYNC_ASSIGN_OR_RETURN(std::optional<std::string> anchor, ReadAnchor(schema.name));
  std::string from = anchor.value_or("0");
  std::vector<Param> params;
  uint64_t next_xid = 0;
  int64_t max_seq = 0;
  if (pg) {
    // Transactions still running now may commit tracking rows with smaller
    // ids later: read from the oldest of them next time (re-reading a row
    // is harmless, missing one is not).
    uint64_t current = ParsePgAnchor(from);
    MESHSYNC_ASSIGN_OR_RETURN(uint64_t xmin, SnapshotXmin());
    next_xid = std::max(current, xmin);
    params.push_back(Param{Text(std::to_string(current)), Kind::kText});
  } else {
    max_seq = ParseInteger(from).value_or(0);
    params.push_back(Param{Text(from), Kind::kInteger});
  }
  if (resync) {
    // Read before the rows: a write after this point is read again next
    // time, which is harmless.
    if (!pg) {
      MESHSYNC_ASSIGN_OR_RETURN(auto last, QueryValue(db_, "SELECT coalesce(max(seq), 0) FROM " +
                                                               TrackingTable(t.number)));
      max_seq = last ? ParseInteger(Payload(*last)).value_or(max_seq) : max_seq;
    }
    MESHSYNC_RETURN_IF_ERROR(ResyncTable(t, recorder));
  } else {
    size_t n = schema.columns.size();
    size_t k = schema.pk.size();
    std::vector<std::string> pk(k);
    MESHSYNC_RETURN_IF_ERROR(db_.Query(t.detect_sql, params, [&](Row row) -> Status {
      ++rows_scanned_;
      if (!pg) max_seq = std::max(max_seq, ParseInteger(Payload(row[0])).value_or(0));
      bool present = row[1 + n] == "v1";
      for (size_t i = 0; i < k; ++i) pk[i] = row[2 + n + i];
      return DetectRow(t, pk, present ? row.subspan(1, n) : Row(), recorder);
    }));
  }
  pending_anchors_[schema.name] = pg ? std::to_string(next_xid) : std::to_string(max_seq);
  return Status::Ok();
}

// Compares every row of `t` with its metadata, and takes the items of `t`
// whose rows are gone for deleted.
Status TableProvider::ResyncTable(const Table& t, ChangeRecorder& recorder) {
  const TableSchema& schema = t.schema;
  std::unordered_set<std::string> seen;
  std::vector<std::string> pk(schema.pk.size());
  MESHSYNC_RETURN_IF_ERROR(db_.Query(t.all_rows_sql, {}, [&](Row row) -> Status {
    ++rows_scanned_;
    for (size_t i = 0; i < pk.size(); ++i) pk[i] = row[schema.pk[i]];
    seen.insert(MakeKey(schema.name, pk));
    return DetectRow(t, pk, row, recorder);
  }));
  return recorder.RecordDeletions([&](const ItemMetadata& item) {
    return SplitKey(item.key)[0] == schema.name && !seen.contains(item.key);
  });
}

Status TableProvider::DetectRow(const Table& t, std::span<const std::string> pk, Row values,
                                ChangeRecorder& recorder) {
  const TableSchema& schema = t.schema;
  std::string key = MakeKey(schema.name, pk);
  // Most rows are items under the id their key derives; a row whose id is
  // another (see RowItemId) is found by its key.
  ItemId derived = RowItemId(t.id_prefix, schema.name, pk);
  MESHSYNC_ASSIGN_OR_RETURN(std::optional<ItemMetadata> existing, recorder.FindItem(derived));
  std::optional<ItemId> id;
  if (existing && existing->key == key) {
    id = derived;
  } else {
    std::optional<ItemMetadata> at_derived = std::move(existing);
    MESHSYNC_ASSIGN_OR_RETURN(existing, recorder.FindByKey(key));
    if (existing) {
      id = existing->id;
    } else if (!at_derived || at_derived->tombstone) {
      // A derived id held by another live row (a hash collision) is left
      // to the engine to replace with a random one.
      id = derived;
      existing = std::move(at_derived);
    }
  }
  bool live = existing && !existing->tombstone;
  if (values.empty()) {
    if (!live) return Status::Ok();
    LocalChange change;
    change.id = existing->id;
    change.deleted = true;
    change.key = std::move(key);
    return recorder.Record(std::move(change)).status();
  }
  size_t n = schema.columns.size();
  FieldHashes hashes;
  hashes.reserve(n + 1);
  hashes[kTableUnit] = UnitHash(kTableField, schema.name);
  for (size_t c = 0; c < n; ++c) hashes[t.units[c]] = UnitHash(schema.columns[c].name, values[c]);
  LocalChange change;
  change.id = id;
  change.key = std::move(key);
  change.provider_state = EncodeFieldHashes(hashes);
  rows_.Put(change.key, change.provider_state, values);
  change.changed_units =
      ChangedUnits(live ? DecodeFieldHashes(existing->provider_state) : FieldHashes(), hashes);
  if (live && change.changed_units.empty() && existing->key == change.key &&
      existing->provider_state == change.provider_state) {
    return Status::Ok();
  }
  return recorder.Record(std::move(change)).status();
}

Status TableProvider::ChangesRecorded() {
  if (pending_anchors_.empty() && !clear_applying_) return Status::Ok();
  // One transaction: on SQLite, each commit of the user's database syncs
  // its journal and the database.
  MESHSYNC_RETURN_IF_ERROR(
      db_.Exec(db_.dialect() == Dialect::kSqlite ? "BEGIN IMMEDIATE" : "BEGIN"));
  Status status;
  for (const auto& [table, anchor] : pending_anchors_) {
    Param params[] = {{Text(anchor_owner_)}, {Text(table)}, {Text(anchor)}};
    status =
        db_.Query("INSERT INTO meshsync_anchors(replica, tbl, anchor) VALUES (" +
                      db_.Placeholder(1) + ", " + db_.Placeholder(2) + ", " + db_.Placeholder(3) +
                      ") ON CONFLICT(replica, tbl) DO UPDATE SET anchor = excluded.anchor",
                  params, [](Row) { return Status::Ok(); });
    if (!status.ok()) break;
  }
  // What the last batch wrote is in the metadata now, whether it was known
  // to be (applied_) or the scan compared every row.
  if (status.ok() && clear_applying_) status = ClearApplyingRow();
  if (status.ok()) status = db_.Exec("COMMIT");
  if (!status.ok()) {
    (void)db_.Exec("ROLLBACK");
    return status;
  }
  pending_anchors_.clear();
  if (clear_applying_) applied_ = false;
  clear_applying_ = false;
  return Status::Ok();
}

Status TableProvider::LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                                     std::vector<UnitData>& out) {
  // The row the scan kept: its values are the ones whose hashes make up
  // the state it was kept with, which is the item's, so they need no check.
  std::vector<std::string_view>& row = loaded_row_;
  const bool kept = rows_.Get(item.key, item.provider_state, row);
  const Table* t = nullptr;
  std::optional<std::vector<std::string>> read;
  FieldHashes state;
  if (kept) {
    MESHSYNC_ASSIGN_OR_RETURN(t, TableOf(KeyTable(item.key)));
  } else {
    // Else the row as it is now, which must still be the one scanned.
    std::vector<std::string> parts = SplitKey(item.key);
    MESHSYNC_ASSIGN_OR_RETURN(t, TableOf(parts[0]));
    if (parts.size() != 1 + t->schema.pk.size())
      return DataLossError("the key of item " + item.id.ToHex() + " does not fit its table");
    std::span<const std::string> pk(parts.data() + 1, parts.size() - 1);
    MESHSYNC_ASSIGN_OR_RETURN(read, ReadRow(*t, pk, false));
    if (!read) return NotFoundError(DescribeKey(item.key) + " was deleted since it was scanned");
    row.assign(read->begin(), read->end());
    state = DecodeFieldHashes(item.provider_state);
  }
  out.reserve(out.size() + units.size());
  for (ChangeUnitId unit : units) {
    std::string data;
    if (unit == kTableUnit) {
      data = EncodeField(kTableField, t->schema.name);
    } else {
      auto c = std::find(t->units.begin(), t->units.end(), unit);
      if (c == t->units.end()) continue;  // not a column here: removed
      size_t i = static_cast<size_t>(c - t->units.begin());
      data = EncodeField(t->schema.columns[i].name, row[i]);
    }
    auto it = state.find(unit);
    if (it != state.end() && it->second != FieldHash(data))
      return UnavailableError(DescribeKey(item.key) + " changed since it was scanned");
    out.push_back(UnitData{unit, std::move(data)});
  }
  return Status::Ok();
}

// A batch's writes are not tracked (schema.h): its transaction marks itself
// in meshsync_applying, active while it writes, and leaves the row behind
// when it commits, naming a batch whose metadata may not be committed yet.
// ChangesCommitted learns that it is (applied_); a row found without that,
// after a crash, makes the next scan compare every row (ResyncTable).
Status TableProvider::BeginBatch() {
  if (in_transaction_) return Status::Ok();
  bool sqlite = db_.dialect() == Dialect::kSqlite;
  MESHSYNC_RETURN_IF_ERROR(
      db_.Exec(sqlite ? "BEGIN IMMEDIATE" : "BEGIN; SET LOCAL meshsync.applying = 'on'"));
  in_transaction_ = true;
  Status marked = sqlite ? SkipTriggersIfOnlyOurs() : Status::Ok();
  Param params[] = {{Text(anchor_owner_)}, {Text(sqlite ? "1" : "0"), Kind::kInteger}};
  if (marked.ok()) {
    marked =
        db_.Query("INSERT INTO meshsync_applying(replica, active) VALUES (" + db_.Placeholder(1) +
                      ", " + db_.Placeholder(2) + (sqlite ? "" : "::integer") +
                      ") ON CONFLICT(replica) DO UPDATE SET active = excluded.active",
                  params, [](Row) { return Status::Ok(); });
  }
  if (!marked.ok()) {
    (void)db_.Exec("ROLLBACK");
    in_transaction_ = false;
    return marked;
  }
  return Status::Ok();
}

// The tracking triggers skip the batch's writes anyway (their WHEN clause
// finds the mark), but evaluating that clause per row doubled the cost of
// inserting a row. So where they are the only triggers in the database, the
// connection turns triggers off instead (foreign key actions still run).
// Any other trigger (the user's own: an audit table, a full-text index
// kept up to date) must see the sync's writes, so then triggers stay on.
// Read inside the batch's write transaction, so no trigger can be created
// before it commits.
Status TableProvider::SkipTriggersIfOnlyOurs() {
  // The tracking triggers of every enrolled table, synced here or not.
  std::unordered_set<std::string> ours;
  MESHSYNC_RETURN_IF_ERROR(db_.Query("SELECT number FROM meshsync_tables", {}, [&](Row row) {
    std::optional<int64_t> number = ParseInteger(Payload(row[0]));
    if (!number || *number < 0 || *number > INT32_MAX) return Status::Ok();  // names no trigger
    for (std::string_view op : kSqliteTriggerOps)
      ours.insert(SqliteTrigger(op, static_cast<int>(*number)));
    return Status::Ok();
  }));
  bool skip = true;
  MESHSYNC_RETURN_IF_ERROR(
      db_.Query("SELECT name FROM sqlite_schema WHERE type = 'trigger'", {}, [&](Row row) {
        skip &= ours.contains(std::string(Payload(row[0])));
        return Status::Ok();
      }));
  if (skip != triggers_skipped_ && db_.SetTriggersEnabled(!skip)) triggers_skipped_ = skip;
  return Status::Ok();
}

Status TableProvider::ClearApplyingRow() {
  Param owner{Text(anchor_owner_)};
  return db_.Query("DELETE FROM meshsync_applying WHERE replica = " + db_.Placeholder(1),
                   std::span(&owner, 1), [](Row) { return Status::Ok(); });
}

Status TableProvider::ClearApplying() {
  MESHSYNC_RETURN_IF_ERROR(ClearApplyingRow());
  applied_ = false;
  return Status::Ok();
}

// Statements without parameters or results, prepared once (Query caches
// them) rather than parsed per row.
Status TableProvider::Run(const char* sql) {
  return db_.Query(sql, {}, [](Row) { return Status::Ok(); });
}

Result<SaveResult> TableProvider::SaveChange(const SaveRequest& request) {
  MESHSYNC_RETURN_IF_ERROR(BeginBatch());
  Result<Target> target = Resolve(request);
  if (!target.ok()) return target.status();
  return SaveAlone(request, *target);
}

Result<SaveResult> TableProvider::SaveAlone(const SaveRequest& request, const Target& target) {
  MESHSYNC_RETURN_IF_ERROR(Run("SAVEPOINT meshsync_item"));
  Result<SaveResult> result = Save(request, target);
  Status end = result.ok() ? Run("RELEASE meshsync_item") : Run("ROLLBACK TO meshsync_item");
  if (!result.ok() && end.ok()) end = Run("RELEASE meshsync_item");
  if (!end.ok()) return end;
  return result;
}

// Rows are independent items, so a batch is applied in the order of each
// table's key, whatever the order of item ids (hashes) it came in: each
// write lands next to the last one, where a random order touches a page of
// the table, its indexes and its tracking table per row. And a group of rows
// shares one savepoint; if any row fails, the group is rolled back and
// applied again a row at a time, each in its own savepoint as SaveChange
// does, so that a failing row still leaves no trace and the others land.
void TableProvider::SaveChanges(std::span<const SaveRequest> requests,
                                std::vector<Result<SaveResult>>& results) {
  constexpr size_t kGroup = 256;
  std::vector<std::optional<Result<SaveResult>>> out(requests.size());
  if (Status begun = BeginBatch(); !begun.ok()) {
    for (size_t i = 0; i < requests.size(); ++i) results.push_back(begun);
    return;
  }
  struct Ordered {
    size_t index;
    Target target;
    std::optional<int64_t> number;  // a single integer key, ordered as a number
  };
  std::vector<Ordered> order;
  order.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    Result<Target> target = Resolve(requests[i]);
    if (!target.ok()) {
      out[i] = target.status();
      continue;
    }
    std::optional<int64_t> number;
    const TableSchema& schema = target->table->schema;
    if (schema.pk.size() == 1 && schema.columns[schema.pk[0]].kind == Kind::kInteger &&
        IsText(target->pk[0])) {
      number = ParseInteger(Payload(target->pk[0]));
    }
    order.push_back(Ordered{i, *std::move(target), number});
  }
  std::stable_sort(order.begin(), order.end(), [](const Ordered& a, const Ordered& b) {
    if (a.target.table->number != b.target.table->number)
      return a.target.table->number < b.target.table->number;
    if (a.number && b.number) return *a.number < *b.number;
    if (a.number.has_value() != b.number.has_value()) return a.number.has_value();
    return a.target.pk < b.target.pk;
  });
  // A new row with every column can share an INSERT with its neighbours.
  auto insertable = [&requests](const Ordered& o) {
    return requests[o.index].action == SaveAction::kCreate &&
           o.target.given.size() == o.target.table->schema.columns.size();
  };
  for (size_t from = 0; from < order.size(); from += kGroup) {
    size_t to = std::min(order.size(), from + kGroup);
    bool grouped = false;
    if (to - from > 1 && Run("SAVEPOINT meshsync_group").ok()) {
      grouped = true;
      for (size_t i = from; i < to && grouped;) {
        if (insertable(order[i])) {
          const Table* t = order[i].target.table;
          size_t per_insert = std::max<size_t>(1, kMaxInsertParams / t->quoted.size());
          size_t end = i + 1;
          while (end < to && end - i < per_insert && insertable(order[end]) &&
                 order[end].target.table == t) {
            ++end;
          }
          std::vector<const Target*> rows;
          for (size_t r = i; r < end; ++r) rows.push_back(&order[r].target);
          std::vector<std::optional<Result<SaveResult>>> inserted(rows.size());
          grouped = InsertRows(*t, rows, inserted).ok();
          for (size_t r = i; grouped && r < end; ++r)
            out[order[r].index] = std::move(inserted[r - i]);
          i = end;
          continue;
        }
        Result<SaveResult> saved = Save(requests[order[i].index], order[i].target);
        if (saved.ok()) {
          out[order[i].index] = std::move(saved);
        } else {
          grouped = false;
        }
        ++i;
      }
      if (grouped) grouped = Run("RELEASE meshsync_group").ok();
      if (!grouped) {
        // Undo the group; its rows go again one at a time.
        Status undone = Run("ROLLBACK TO meshsync_group");
        if (undone.ok()) undone = Run("RELEASE meshsync_group");
        if (!undone.ok()) {
          for (size_t i = from; i < order.size(); ++i) out[order[i].index] = undone;
          break;
        }
      }
    }
    if (grouped) continue;
    for (size_t i = from; i < to; ++i) {
      out[order[i].index] = SaveAlone(requests[order[i].index], order[i].target);
    }
  }
  for (auto& result : out) results.push_back(*std::move(result));
}

// The result of writing `stored` (all columns, table order) for a row that
// was given `target.given`, and whose state so far is `state`.
SaveResult TableProvider::Saved(const Target& target, Row stored, FieldHashes state) const {
  const Table& t = *target.table;
  const TableSchema& schema = t.schema;
  SaveResult result;
  result.key = target.key;
  state.reserve(schema.columns.size() + 1);
  for (size_t c = 0; c < schema.columns.size(); ++c)
    state[t.units[c]] = UnitHash(schema.columns[c].name, stored[c]);
  state[kTableUnit] = UnitHash(kTableField, schema.name);
  // The database normalised a value (value.h): the stored one spreads.
  for (const auto& [c, value] : target.given) {
    if (stored[c] != value) result.rewritten_units.push_back(t.units[c]);
  }
  result.provider_state = EncodeFieldHashes(state);
  return result;
}

// One INSERT for several new rows of `t`, each given every column. A row
// that is there already (the application added it since the last scan) is
// left alone and gets the error SaveChange would give; the others are
// written and their stored values read back (RETURNING). A statement that
// fails, or rows that come back under keys other than the ones given (a
// database that normalised a key), fail the whole call: the caller undoes
// it and saves the rows one at a time.
//
// Where the database stores every value as given (Connection::StoresAsGiven:
// SQLite, values in their canonical form, columns whose affinity keeps
// them), the rows are not read back: RETURNING more than doubled the cost
// of an INSERT (100,000 rows of 6 columns: 0.13 s, 0.35 s returning them).
// Then a row that is there already fails the call like a failed statement.
Status TableProvider::InsertRows(const Table& t, std::span<const Target* const> rows,
                                 std::vector<std::optional<Result<SaveResult>>>& out) {
  size_t n = t.quoted.size();
  std::vector<Param> params;
  params.reserve(rows.size() * n);
  bool as_given = true;
  for (const Target* target : rows) {
    for (const auto& [c, value] : target->given) {
      params.push_back(Param{std::string(value), t.schema.columns[c].kind});
      as_given = as_given && db_.StoresAsGiven(params.back(), t.affinities[c]);
    }
    rows_.Erase(target->key);
  }
  if (as_given) {
    MESHSYNC_ASSIGN_OR_RETURN(int64_t written,
                              db_.Execute(InsertSql(t, rows.size(), false), params));
    if (written != static_cast<int64_t>(rows.size()))
      return UnavailableError("a new row of " + t.schema.name + " was added here meanwhile");
    std::vector<std::string> stored(n);
    for (size_t r = 0; r < rows.size(); ++r) {
      for (size_t c = 0; c < n; ++c) stored[c] = std::move(params[r * n + c].value);
      out[r] = Saved(*rows[r], stored, {});
    }
    return Status::Ok();
  }
  std::unordered_map<std::string_view, size_t> by_key;
  for (size_t r = 0; r < rows.size(); ++r) by_key.emplace(rows[r]->key, r);
  std::vector<std::string> pk(t.schema.pk.size());
  MESHSYNC_RETURN_IF_ERROR(
      db_.Query(InsertSql(t, rows.size(), true), params, [&](Row stored) -> Status {
        for (size_t k = 0; k < pk.size(); ++k) pk[k] = stored[t.schema.pk[k]];
        auto it = by_key.find(MakeKey(t.schema.name, pk));
        if (it == by_key.end() || out[it->second].has_value())
          return DataLossError("a row came back under a key it was not given");
        out[it->second] = Saved(*rows[it->second], stored, {});
        return Status::Ok();
      }));
  for (size_t r = 0; r < rows.size(); ++r) {
    if (!out[r].has_value()) out[r] = AddedHere(rows[r]->key);
  }
  return Status::Ok();
}

const std::string& TableProvider::InsertSql(const Table& t, size_t rows, bool returning) const {
  std::string& sql = t.insert_sql[{rows, returning}];
  if (!sql.empty()) return sql;
  size_t n = t.quoted.size();
  std::string columns = Join(t.quoted, ", ");
  sql = "INSERT INTO " + t.quoted_table + "(" + columns + ") VALUES ";
  for (size_t r = 0; r < rows; ++r) {
    sql += r == 0 ? "(" : ", (";
    for (size_t c = 0; c < n; ++c) {
      if (c > 0) sql += ", ";
      sql += db_.Placeholder(r * n + c + 1);
    }
    sql += ")";
  }
  sql += " ON CONFLICT DO NOTHING";
  if (returning) sql += " RETURNING " + columns;
  return sql;
}

Status TableProvider::AddedHere(std::string_view key) {
  return UnavailableError(DescribeKey(key) +
                          " was added here since the last scan (or a unique value is taken); "
                          "it syncs next time");
}

Result<TableProvider::Target> TableProvider::Resolve(const SaveRequest& request) const {
  Target target;
  std::string table_name;
  std::vector<std::pair<std::string_view, std::string_view>> fields;
  fields.reserve(request.units.size());
  for (const UnitData& u : request.units) {
    std::string_view name, value;
    MESHSYNC_RETURN_IF_ERROR(DecodeField(u.data, name, value));
    if (name == kTableField) {
      table_name = value;
    } else {
      if (!IsValidValue(value)) {
        return InvalidArgumentError("column " + std::string(name) +
                                    ": a value that is not encoded for SQL");
      }
      fields.emplace_back(name, value);
    }
  }
  if (request.local != nullptr && !request.local->key.empty()) {
    std::vector<std::string> parts = SplitKey(request.local->key);
    table_name = parts[0];
    target.pk.assign(parts.begin() + 1, parts.end());
  }
  if (table_name.empty()) return InvalidArgumentError("a row without its table (#table)");
  MESHSYNC_ASSIGN_OR_RETURN(const Table* t, TableOf(table_name));
  target.table = t;
  target.given.reserve(fields.size());
  for (const auto& [name, value] : fields) {
    auto it = t->column_by_name.find(name);
    if (it == t->column_by_name.end()) {
      return InvalidArgumentError("column " + std::string(name) + " is not in table " + table_name +
                                  " of " + db_.name());
    }
    target.given.emplace_back(it->second, value);
  }
  std::stable_sort(target.given.begin(), target.given.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // Units with other ids can name the same column (a peer may send
  // anything): one value per column, or columns would shift in an INSERT.
  for (size_t i = 1; i < target.given.size(); ++i) {
    if (target.given[i].first == target.given[i - 1].first) {
      return InvalidArgumentError("column " + t->schema.columns[target.given[i].first].name +
                                  " is given twice");
    }
  }
  const TableSchema& schema = t->schema;
  if (request.action == SaveAction::kCreate) {
    target.pk.assign(schema.pk.size(), std::string());
    for (size_t k = 0; k < schema.pk.size(); ++k) {
      auto it = std::find_if(target.given.begin(), target.given.end(),
                             [&](const auto& g) { return g.first == schema.pk[k]; });
      if (it == target.given.end())
        return InvalidArgumentError("a new row of " + table_name + " without its key columns");
      target.pk[k] = it->second;
    }
  }
  if (target.pk.size() != schema.pk.size())
    return DataLossError("a key that does not fit table " + table_name);
  target.key = MakeKey(table_name, target.pk);
  return target;
}

Result<SaveResult> TableProvider::Save(const SaveRequest& request, const Target& target) {
  const Table* t = target.table;
  const TableSchema& schema = t->schema;
  const std::vector<std::pair<size_t, std::string_view>>& given = target.given;
  const std::vector<std::string>& pk = target.pk;
  const std::string& key = target.key;
  rows_.Erase(key);
  FieldHashes state;
  if (request.local != nullptr) state = DecodeFieldHashes(request.local->provider_state);
  SaveResult result;
  result.key = key;

  std::optional<std::vector<std::string>> stored;
  // Only key columns given: nothing to write, and the row is read below.
  const bool writes = std::any_of(given.begin(), given.end(),
                                  [&](const auto& g) { return schema.columns[g.first].pk == 0; });
  if (request.action == SaveAction::kUpdate && writes && db_.HashesFields()) {
    // The UPDATE checks what the branch below reads the row for; if no row
    // matches, that branch says why.
    MESHSYNC_ASSIGN_OR_RETURN(stored, Update(*t, target, state));
  }
  if (stored) {
    // Written above.
  } else if (request.action == SaveAction::kCreate) {
    std::vector<Param> params;
    params.reserve(given.size());
    for (const auto& [c, value] : given) {
      params.push_back(Param{std::string(value), schema.columns[c].kind});
    }
    bool every_column = given.size() == schema.columns.size();  // given is in column order
    std::string built;
    if (!every_column) {
      std::vector<std::string> columns, placeholders;
      for (const auto& [c, value] : given) {
        columns.push_back(t->quoted[c]);
        placeholders.push_back(db_.Placeholder(columns.size()));
      }
      built = "INSERT INTO " + t->quoted_table + "(" + Join(columns, ", ") + ") VALUES (" +
              Join(placeholders, ", ") + ") ON CONFLICT DO NOTHING RETURNING " +
              Join(t->quoted, ", ");
    }
    MESHSYNC_RETURN_IF_ERROR(
        db_.Query(every_column ? InsertSql(*t, 1, true) : built, params, [&stored](Row r) {
          stored.emplace(r.begin(), r.end());
          return Status::Ok();
        }));
    if (!stored) return AddedHere(key);
    return Saved(target, *stored, {});
  } else {
    MESHSYNC_ASSIGN_OR_RETURN(auto current, ReadRow(*t, pk, true));
    if (!current) {
      if (request.action == SaveAction::kDelete) return result;
      return UnavailableError(DescribeKey(key) + " was deleted here since the last scan");
    }
    // Never overwrite what the application wrote since the last scan.
    auto unchanged = [&](size_t c) {
      auto it = state.find(t->units[c]);
      return it == state.end() || it->second == UnitHash(schema.columns[c].name, (*current)[c]);
    };
    if (request.action == SaveAction::kDelete) {
      for (size_t c = 0; c < schema.columns.size(); ++c) {
        if (!unchanged(c))
          return UnavailableError(DescribeKey(key) + " changed here since the last scan");
      }
      std::vector<Param> params = t->PkParams(pk);
      MESHSYNC_RETURN_IF_ERROR(db_.Query(t->delete_sql, params, [](Row) { return Status::Ok(); }));
      return result;
    }
    for (const auto& [c, value] : given) {
      if (!unchanged(c))
        return UnavailableError(DescribeKey(key) + " changed here since the last scan");
    }
    if (!writes) {
      stored = std::move(current);
    } else {
      MESHSYNC_ASSIGN_OR_RETURN(stored, Update(*t, target, FieldHashes()));  // checked above
      if (!stored) return UnavailableError(DescribeKey(key) + " vanished while being updated");
    }
  }
  // An update. Columns not given keep the values the state names (the
  // application has not changed them: checked above, or by Update).
  for (const auto& [c, value] : given)
    state[t->units[c]] = UnitHash(schema.columns[c].name, (*stored)[c]);
  state[kTableUnit] = UnitHash(kTableField, schema.name);
  // The database normalised a value (value.h): the stored one spreads.
  for (const auto& [c, value] : given) {
    if ((*stored)[c] != value) result.rewritten_units.push_back(t->units[c]);
  }
  result.provider_state = EncodeFieldHashes(state);
  return result;
}

// UPDATE ... RETURNING of the given columns but the key's (a row's key
// never changes). With `guard` (HashesFields), only if every given column
// guard has a hash of still holds that value. The row as stored, or nullopt
// if no row matched.
// REQUIRES: a column not of the key is given.
Result<std::optional<std::vector<std::string>>> TableProvider::Update(const Table& t,
                                                                      const Target& target,
                                                                      const FieldHashes& guard) {
  const TableSchema& schema = t.schema;
  std::vector<Param> params = t.PkParams(target.pk);
  std::string shape(schema.columns.size(), '\0');
  for (const auto& [c, value] : target.given) {
    if (schema.columns[c].pk > 0) continue;
    shape[c] = 1;
    params.push_back(Param{std::string(value), schema.columns[c].kind});
  }
  for (const auto& [c, value] : target.given) {
    auto it = guard.find(t.units[c]);
    if (it == guard.end()) continue;
    shape[c] = static_cast<char>(shape[c] | 2);
    params.push_back(Param{Text(schema.columns[c].name), Kind::kText});
    params.push_back(Param{Text(std::to_string(static_cast<int64_t>(it->second))), Kind::kInteger});
  }
  // As many texts as statements the connection keeps (kMaxCachedStatements).
  if (t.update_sql.size() >= kMaxCachedStatements && !t.update_sql.contains(shape)) {
    t.update_sql.clear();
  }
  std::string& sql = t.update_sql[shape];
  if (sql.empty()) {
    // Parameters in the order pushed above: the key, the values set, then a
    // (name, hash) pair per guarded column.
    size_t next = schema.pk.size();
    std::vector<std::string> sets, guards;
    for (const auto& [c, value] : target.given) {
      if (shape[c] & 1) sets.push_back(t.quoted[c] + " = " + db_.Placeholder(++next));
    }
    for (const auto& [c, value] : target.given) {
      if (!(shape[c] & 2)) continue;
      guards.push_back("meshsync_field_hash(" + db_.Placeholder(next + 1) + ", " + t.quoted[c] +
                       ") = " + db_.Placeholder(next + 2));
      next += 2;
    }
    sql = "UPDATE " + t.quoted_table + " SET " + Join(sets, ", ") + " WHERE " + t.pk_where +
          (guards.empty() ? "" : " AND " + Join(guards, " AND ")) + " RETURNING " +
          Join(t.quoted, ", ");
  }
  std::optional<std::vector<std::string>> stored;
  MESHSYNC_RETURN_IF_ERROR(db_.Query(sql, params, [&stored](Row r) {
    stored.emplace(r.begin(), r.end());
    return Status::Ok();
  }));
  return stored;
}

Result<uint64_t> TableProvider::SnapshotXmin() {
  MESHSYNC_ASSIGN_OR_RETURN(auto xmin,
                            QueryValue(db_, "SELECT pg_snapshot_xmin(pg_current_snapshot())"));
  std::optional<uint64_t> value = xmin ? ParseXid(Payload(*xmin)) : std::nullopt;
  if (!value) return DataLossError(db_.name() + ": no snapshot");
  return *value;
}

Result<std::optional<std::string>> TableProvider::ReadAnchor(std::string_view table) {
  Param owner[] = {{Text(anchor_owner_)}, {Text(std::string(table))}};
  MESHSYNC_ASSIGN_OR_RETURN(auto anchor,
                            QueryValue(db_,
                                       "SELECT anchor FROM meshsync_anchors WHERE replica = " +
                                           db_.Placeholder(1) + " AND tbl = " + db_.Placeholder(2),
                                       owner));
  if (!anchor) return std::optional<std::string>();
  return std::optional<std::string>(Payload(*anchor));
}

Status TableProvider::CommitChanges() {
  if (!in_transaction_) return Status::Ok();
  in_transaction_ = false;
  Status status;
  if (db_.dialect() == Dialect::kSqlite) {
    // Unmarked before the commit, so no later write of anyone's is skipped.
    Param owner{Text(anchor_owner_)};
    status =
        db_.Query("UPDATE meshsync_applying SET active = 0 WHERE replica = " + db_.Placeholder(1),
                  std::span(&owner, 1), [](Row) { return Status::Ok(); });
  }
  if (status.ok()) status = db_.Exec("COMMIT");
  if (!status.ok()) {
    (void)db_.Exec("ROLLBACK");
    return status;
  }
  applied_ = false;  // the row names this batch now, whose metadata is not committed yet
  committed_ = true;
  return Status::Ok();
}

// The batch's metadata is committed: its meshsync_applying row names nothing
// unknown any more. It is left for the next batch to overwrite, and removed
// by the next scan or when the provider closes, which saves a commit of the
// user's database per batch.
Status TableProvider::ChangesCommitted() {
  if (committed_) applied_ = true;
  committed_ = false;
  return Status::Ok();
}

}  // namespace meshsync::sql
