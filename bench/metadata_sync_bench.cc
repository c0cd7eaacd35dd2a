// Syncs N metadata-only item changes between two SQLite metadata stores and
// compares with the limit for this design: bulk-inserting the same metadata
// rows into SQLite in one transaction. Also reports peak RSS, bytes per item
// in the store, and the encoded knowledge of 10 replicas after a full sync.
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "memory/record_provider.h"
#include "meshsync/sync.h"
#include "src/store/item_codec.h"

namespace meshsync {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr ChangeUnitId kContentUnit = 1;

// A provider whose items carry versions but no data: it measures the engine
// and the metadata store alone.
class MetadataOnlyProvider final : public Provider {
 public:
  std::string_view Name() const override { return "bench-metadata"; }
  Status DetectChanges(ChangeRecorder&) override { return Status::Ok(); }
  Status LoadChangeData(const ItemMetadata&, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override {
    for (ChangeUnitId unit : units) out.push_back(UnitData{unit, {}});
    return Status::Ok();
  }
  Result<SaveResult> SaveChange(const SaveRequest&) override { return SaveResult{}; }
};

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

uint64_t FileBytes(const fs::path& db) {
  // Fold the WAL into the database first, so the file holds everything.
  sqlite3* handle;
  if (sqlite3_open(db.c_str(), &handle) == SQLITE_OK) {
    sqlite3_exec(handle, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  }
  sqlite3_close(handle);
  return fs::file_size(db);
}

void Check(const Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
    std::exit(1);
  }
}

// Writes `count` items into `store` as local changes of its replica, and
// returns them.
std::vector<ItemMetadata> Populate(MetadataStore& store, size_t count) {
  std::vector<ItemMetadata> items;
  items.reserve(count);
  HybridLogicalClock hlc(SystemClock());
  for (size_t idx = 0; idx < count; ++idx) {
    ItemMetadata item;
    item.id = ItemId::Generate(SystemClock(), SystemRandom());
    Version version{0, hlc.Next()};
    item.created = version;
    item.updated = version;
    item.units = {UnitVersion{kContentUnit, version}};
    items.push_back(std::move(item));
  }
  constexpr size_t kChunk = 50'000;
  for (size_t first = 0; first < count; first += kChunk) {
    StoreBatch batch;
    batch.upserts.assign(items.begin() + first, items.begin() + std::min(count, first + kChunk));
    batch.tick = hlc.last();
    batch.knowledge = Knowledge(ClockVector{{0, hlc.last()}});
    Check(store.Commit(batch), "populate");
  }
  return items;
}

// The limit: the same rows, bulk-inserted in one transaction with a
// prepared statement into the same schema.
double BulkInsertSeconds(const fs::path& db, const std::vector<ItemMetadata>& items) {
  sqlite3* handle;
  sqlite3_open(db.c_str(), &handle);
  sqlite3_exec(handle,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
               "CREATE TABLE items(id BLOB PRIMARY KEY, key BLOB, versions BLOB NOT NULL) "
               "WITHOUT ROWID;"
               "CREATE INDEX items_by_key ON items(key) WHERE key IS NOT NULL;",
               nullptr, nullptr, nullptr);
  std::vector<std::string> rows;  // encoded up front: only the insert is timed
  rows.reserve(items.size());
  for (const ItemMetadata& item : items) rows.push_back(store::EncodeItemVersions(item));
  sqlite3_stmt* insert;
  sqlite3_prepare_v2(handle, "INSERT INTO items(id, key, versions) VALUES (?1, NULL, ?2)", -1,
                     &insert, nullptr);
  auto start = Clock::now();
  sqlite3_exec(handle, "BEGIN", nullptr, nullptr, nullptr);
  uint8_t id[16];
  for (size_t idx = 0; idx < items.size(); ++idx) {
    items[idx].id.ToBytes(id);
    sqlite3_bind_blob(insert, 1, id, 16, SQLITE_STATIC);
    sqlite3_bind_blob(insert, 2, rows[idx].data(), static_cast<int>(rows[idx].size()),
                      SQLITE_STATIC);
    sqlite3_step(insert);
    sqlite3_reset(insert);
  }
  sqlite3_exec(handle, "COMMIT", nullptr, nullptr, nullptr);
  double seconds = Seconds(start);
  sqlite3_finalize(insert);
  sqlite3_close(handle);
  return seconds;
}

// Ten replicas, each creating records, then syncing until all have met:
// the largest encoded knowledge among them.
size_t KnowledgeBytesAfterFullSync() {
  constexpr int kReplicas = 10;
  std::vector<std::unique_ptr<RecordProvider>> providers;
  std::vector<std::unique_ptr<MetadataStore>> stores;
  std::vector<std::unique_ptr<Replica>> replicas;
  for (int idx = 0; idx < kReplicas; ++idx) {
    providers.push_back(std::make_unique<RecordProvider>());
    stores.push_back(
        OpenMemoryStore(ReplicaId::Generate(SystemRandom()), std::string(RecordProvider::kName)));
    replicas.push_back(std::move(*Replica::Open(*stores.back(), *providers.back())));
    for (int record = 0; record < 100; ++record) {
      providers.back()->Put(ItemId::Generate(SystemClock(), SystemRandom()), "name",
                            "r" + std::to_string(idx) + "-" + std::to_string(record));
    }
  }
  SyncOptions options;
  options.batch_size = 37;  // many batches, so learned knowledge arrives in ranges
  for (int round = 0; round < 2; ++round) {
    for (int idx = 0; idx < kReplicas; ++idx) {
      Check(Synchronize(*replicas[idx], *replicas[(idx + 1) % kReplicas], options).status(),
            "knowledge sync");
    }
  }
  size_t largest = 0;
  for (const auto& replica : replicas) {
    const ReplicaState& state = replica->state();
    largest = std::max(largest, state.knowledge.Encode(state.keys).size());
  }
  return largest;
}

// The measured part, run in a process of its own so that its peak RSS is
// the sync's alone: opens the prepared stores and syncs source -> dest.
int SyncOnly(const fs::path& dir, size_t count) {
  MetadataOnlyProvider source_provider, dest_provider;
  auto source_store =
      OpenSqliteStore((dir / "source.db").string(), "bench-metadata", SystemRandom());
  auto dest_store = OpenSqliteStore((dir / "dest.db").string(), "bench-metadata", SystemRandom());
  Check(source_store.status(), "open source");
  Check(dest_store.status(), "open dest");
  auto source = Replica::Open(**source_store, source_provider);
  auto dest = Replica::Open(**dest_store, dest_provider);
  Check(source.status(), "replica");
  Check(dest.status(), "replica");
  SyncOptions options;
  options.direction = SyncDirection::kAToB;
  options.batch_size = 10'000;
  options.detect_changes = false;
  auto start = Clock::now();
  auto report = Synchronize(**source, **dest, options);
  double seconds = Seconds(start);
  Check(report.status(), "sync");
  if (report->a_to_b.created != count) {
    std::fprintf(stderr, "sync created %llu of %zu items\n",
                 static_cast<unsigned long long>(report->a_to_b.created), count);
    return 1;
  }
  std::printf("%.6f\n", seconds);
  return 0;
}

int Run(const char* self, size_t count) {
  std::string pattern = (fs::temp_directory_path() / "meshsync-bench-XXXXXX").string();
  fs::path dir = mkdtemp(pattern.data());
  double bulk_seconds;
  {
    auto source_store =
        OpenSqliteStore((dir / "source.db").string(), "bench-metadata", SystemRandom());
    Check(source_store.status(), "open source");
    std::vector<ItemMetadata> items = Populate(**source_store, count);
    bulk_seconds = BulkInsertSeconds(dir / "bulk.db", items);
  }

  int out[2];
  if (pipe(out) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    std::string count_arg = std::to_string(count);
    execl(self, self, "--sync-only", dir.c_str(), count_arg.c_str(), nullptr);
    _exit(127);
  }
  close(out[1]);
  char buffer[64] = {};
  ssize_t got = read(out[0], buffer, sizeof buffer - 1);
  close(out[0]);
  int wstatus;
  rusage usage;
  wait4(child, &wstatus, 0, &usage);
  if (got <= 0 || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    std::fprintf(stderr, "the sync process failed\n");
    return 1;
  }
  double sync_seconds = std::strtod(buffer, nullptr);
  double peak_rss_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;
  uint64_t dest_bytes = FileBytes(dir / "dest.db");
  size_t knowledge_bytes = KnowledgeBytesAfterFullSync();

  std::printf("metadata sync, %zu items, SQLite -> SQLite, one session\n", count);
  std::printf("  %-44s %8.3f s  %10.0f items/s\n", "meshsync sync", sync_seconds,
              count / sync_seconds);
  std::printf("  %-44s %8.3f s  %10.0f items/s\n", "SQLite bulk insert, one transaction (limit)",
              bulk_seconds, count / bulk_seconds);
  std::printf("  %-44s %8.2fx   (goal <= 3x)\n", "ratio sync / bulk insert",
              sync_seconds / bulk_seconds);
  std::printf("  %-44s %8.1f MiB  (the sync process, start to end)\n", "peak RSS of the sync",
              peak_rss_mib);
  std::printf("  %-44s %8.1f B    (goal <= 150)\n", "store bytes per item",
              static_cast<double>(dest_bytes) / count);
  std::printf("  %-44s %8zu B    (goal <= 512)\n", "knowledge, 10 replicas after full sync",
              knowledge_bytes);
  if (std::getenv("MESHSYNC_BENCH_KEEP") == nullptr) fs::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace meshsync

int main(int argc, char** argv) {
  auto parse_count = [](const char* text, size_t& count) {
    char* end;
    count = std::strtoull(text, &end, 10);
    return *end == '\0' && count > 0;
  };
  size_t count = 1'000'000;
  if (argc == 4 && std::string_view(argv[1]) == "--sync-only" && parse_count(argv[3], count)) {
    return meshsync::SyncOnly(argv[2], count);
  }
  if (argc > 2 || (argc == 2 && !parse_count(argv[1], count))) {
    std::fprintf(stderr, "usage: metadata_sync_bench [ITEMS]\n");
    return 2;
  }
  return meshsync::Run("/proc/self/exe", count);
}
