// meshsync db: provision, deprovision, sync, status and conflicts of
// SQLite and PostgreSQL tables.
#include "db_commands.h"

#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "cli_util.h"
#include "meshsync/record.h"
#include "sql/database.h"
#include "sql/schema.h"

namespace meshsync::cli {

namespace {

namespace fs = std::filesystem;
using sql::Database;
using sql::DatabaseOptions;

constexpr const char* kDbHelp =
    "usage: meshsync db COMMAND ...\n"
    "  provision URL TABLE...     track TABLEs' changes (tracking tables and triggers; the\n"
    "                             tables and their rows are left as they are)\n"
    "  deprovision URL [TABLE...] remove the tracking of TABLEs (all, if none named) and,\n"
    "                             with the last one, meshsync's metadata of URL\n"
    "  sync URL_A URL_B [--tables T...] [--one-way a-to-b|b-to-a]\n"
    "       [--policy keep-both|a-wins|b-wins] [--wait] [--meta DIR] [--batch N] [--json]\n"
    "                             two-way sync, column by column\n"
    "  status URL [--tables T...] enrolled tables, replica, metadata and conflicts\n"
    "  conflicts URL [--tables T...] [--json]\n"
    "                             columns whose losing values the conflict log keeps\n"
    "URL: sqlite:PATH, or postgresql://USER@HOST:PORT/DB (a libpq URI)\n";

struct Args {
  std::vector<std::string> positional;
  DatabaseOptions db;
  std::string one_way;
  std::string policy = "keep-both";
  size_t batch = 10000;
  bool json = false;
};

// Parses options common to the db commands; returns an error message.
std::optional<std::string> Parse(const std::vector<std::string>& args, size_t from, Args& out) {
  for (size_t i = from; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= args.size()) return std::nullopt;
      return args[++i];
    };
    if (arg == "--tables") {
      size_t before = out.db.tables.size();
      while (i + 1 < args.size() && !args[i + 1].starts_with("--")) {
        out.db.tables.push_back(args[++i]);
      }
      if (out.db.tables.size() == before) return "--tables needs at least one table";
    } else if (arg == "--one-way" || arg == "--policy" || arg == "--meta" || arg == "--batch") {
      std::optional<std::string> v = value();
      if (!v) return arg + " needs a value";
      if (arg == "--one-way") out.one_way = *v;
      if (arg == "--policy") out.policy = *v;
      if (arg == "--meta") out.db.meta_dir = *v;
      if (arg == "--batch") {
        char* end = nullptr;
        unsigned long long n = std::strtoull(v->c_str(), &end, 10);
        if (end == v->c_str() || *end != '\0' || n == 0 || n > 1000000)
          return "--batch is a number from 1 to 1000000";
        out.batch = static_cast<size_t>(n);
      }
    } else if (arg == "--wait") {
      out.db.wait = true;
    } else if (arg == "--json") {
      out.json = true;
    } else if (arg.starts_with("--")) {
      return "unknown option " + arg;
    } else {
      out.positional.push_back(arg);
    }
  }
  return std::nullopt;
}

int RunProvision(const Args& a) {
  if (a.positional.size() < 2) return Usage("usage: meshsync db provision URL TABLE...");
  auto db = sql::Connect(a.positional[0]);
  if (!db.ok()) return Fail(db.status());
  std::vector<std::string> tables(a.positional.begin() + 1, a.positional.end());
  if (Status s = sql::Provision(**db, tables); !s.ok()) return Fail(s);
  for (const std::string& t : tables)
    std::printf("provisioned %s in %s\n", t.c_str(), (*db)->name().c_str());
  return 0;
}

int RunDeprovision(const Args& a) {
  if (a.positional.empty()) return Usage("usage: meshsync db deprovision URL [TABLE...]");
  auto db = sql::Connect(a.positional[0]);
  if (!db.ok()) return Fail(db.status());
  auto meta = sql::MetadataDir(**db, a.positional[0], a.db.meta_dir);
  std::vector<std::string> tables(a.positional.begin() + 1, a.positional.end());
  if (Status s = sql::Deprovision(**db, tables); !s.ok()) return Fail(s);
  // With the last table gone, so is meshsync's metadata of the database.
  auto left = sql::ListEnrolled(**db);
  if (!left.ok()) return Fail(left.status());
  if (left->empty() && meta.ok()) {
    std::error_code ec;
    fs::remove_all(*meta, ec);
    if (ec)
      std::fprintf(stderr, "meshsync: cannot remove %s: %s\n", meta->c_str(), ec.message().c_str());
  }
  std::printf("deprovisioned %s in %s\n", tables.empty() ? "every table" : "the tables named",
              (*db)->name().c_str());
  return 0;
}

void PrintDirection(const char* label, const DirectionReport& r) {
  std::printf("%s: %" PRIu64 " created, %" PRIu64 " updated, %" PRIu64 " deleted, %" PRIu64
              " conflicts, %" PRIu64 " not applied\n",
              label, r.created, r.updated, r.deleted, r.conflicts, r.errors.size());
}

std::string JsonDirection(const DirectionReport& r) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"created\": %" PRIu64 ", \"updated\": %" PRIu64 ", \"deleted\": %" PRIu64
                ", \"conflicts\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"errors\": %zu}",
                r.created, r.updated, r.deleted, r.conflicts, r.bytes, r.errors.size());
  return buf;
}

int RunDbSync(const Args& a) {
  if (a.positional.size() != 2) return Usage("usage: meshsync db sync URL_A URL_B [options]");
  sql::DbSyncOptions options;
  options.batch_size = a.batch;
  if (a.policy == "keep-both") {
    options.policy = sql::DbPolicy::kKeepBoth;
  } else if (a.policy == "a-wins") {
    options.policy = sql::DbPolicy::kAWins;
  } else if (a.policy == "b-wins") {
    options.policy = sql::DbPolicy::kBWins;
  } else {
    return Usage("--policy is keep-both, a-wins or b-wins");
  }
  if (a.one_way == "a-to-b") {
    options.direction = SyncDirection::kAToB;
  } else if (a.one_way == "b-to-a") {
    options.direction = SyncDirection::kBToA;
  } else if (!a.one_way.empty()) {
    return Usage("--one-way is a-to-b or b-to-a");
  }
  {
    // The same database twice (under two spellings) shares its metadata.
    std::string dirs[2];
    for (int k = 0; k < 2; ++k) {
      auto c = sql::Connect(a.positional[k]);
      if (!c.ok()) return Fail(c.status());
      auto dir = sql::MetadataDir(**c, a.positional[k], a.db.meta_dir);
      if (!dir.ok()) return Fail(dir.status());
      dirs[k] = *dir;
    }
    if (dirs[0] == dirs[1]) return Fail(InvalidArgumentError("A and B are the same database"));
  }
  auto da = Database::Open(a.positional[0], a.db);
  if (!da.ok()) return Fail(da.status());
  auto db = Database::Open(a.positional[1], a.db);
  if (!db.ok()) return Fail(db.status());
  auto report = sql::SyncDatabases(**da, **db, options);
  if (!report.ok()) return Fail(report.status());
  if (a.json) {
    std::printf(
        "{\"a\": %s, \"b\": %s, \"a_to_b\": %s, \"b_to_a\": %s, \"rounds\": %d, "
        "\"errors\": [",
        Json((*da)->name()).c_str(), Json((*db)->name()).c_str(),
        JsonDirection(report->a_to_b).c_str(), JsonDirection(report->b_to_a).c_str(),
        report->rounds);
    for (size_t i = 0; i < report->problems.size(); ++i)
      std::printf("%s%s", i ? ", " : "", Json(report->problems[i]).c_str());
    std::printf("]}\n");
  } else {
    PrintDirection("a -> b", report->a_to_b);
    PrintDirection("b -> a", report->b_to_a);
    for (const std::string& p : report->problems) std::fprintf(stderr, "  %s\n", p.c_str());
  }
  if (!report->problems.empty()) {
    std::fprintf(stderr, "meshsync: %zu rows did not sync (listed above); run sync again\n",
                 report->problems.size());
    return 1;
  }
  return 0;
}

int RunDbStatus(const Args& a) {
  if (a.positional.size() != 1) return Usage("usage: meshsync db status URL [--tables T...]");
  auto d = Database::Open(a.positional[0], a.db);
  if (!d.ok()) return Fail(d.status());
  Database& db = **d;
  auto items = db.store().CountItems();
  auto conflicts = db.store().ListConflicts();
  if (!items.ok()) return Fail(items.status());
  if (!conflicts.ok()) return Fail(conflicts.status());
  std::printf("database:   %s\nreplica:    %s\nmetadata:   %s\n", db.name().c_str(),
              db.replica().id().ToHex().c_str(), db.metadata_path().c_str());
  for (const sql::TableSchema& t : db.provider().schemas())
    std::printf("table:      %s (%s)\n", t.name.c_str(), t.Signature().c_str());
  std::printf("rows known: %zu (with deleted ones)\nconflicts:  %zu logged\n", *items,
              conflicts->size());
  return 0;
}

}  // namespace

int RunDbConflicts(const std::vector<std::string>& args, size_t from) {
  Args a;
  if (auto error = Parse(args, from, a)) return Usage(error->c_str());
  if (a.positional.size() != 1) return Usage("usage: meshsync conflicts URL [--json]");
  auto d = Database::Open(a.positional[0], a.db);
  if (!d.ok()) return Fail(d.status());
  Database& db = **d;
  auto conflicts = db.store().ListConflicts();
  if (!conflicts.ok()) return Fail(conflicts.status());
  const ReplicaKeyMap& keys = db.replica().state().keys;
  if (a.json) std::printf("[");
  bool first = true;
  for (const ConflictRecord& c : *conflicts) {
    std::string row = c.item.ToHex();
    if (auto item = db.store().GetItem(c.item); item.ok() && *item && !(*item)->key.empty())
      row = sql::TableProvider::DescribeKey((*item)->key);
    std::string column, value;
    if (!c.loser_is_delete && !DecodeField(c.loser_data, column, value).ok()) column = "?";
    std::string shown = c.loser_is_delete    ? "(row deleted)"
                        : sql::IsNull(value) ? "NULL"
                        : sql::IsBlob(value) ? "(" + std::to_string(value.size() - 1) + " bytes)"
                                             : std::string(sql::Payload(value));
    std::string winner = keys.IdOf(c.winner.replica).ShortName();
    std::string loser = keys.IdOf(c.loser.replica).ShortName();
    if (a.json) {
      std::printf("%s\n  {\"id\": %" PRIu64
                  ", \"row\": %s, \"column\": %s, \"kind\": %s, \"winner\": %s, \"loser\": %s, "
                  "\"losing_value\": %s, \"loser_deleted\": %s, \"detected\": %s}",
                  first ? "" : ",", c.id, Json(row).c_str(), Json(column).c_str(),
                  Json(ConflictKindName(c.kind)).c_str(), Json(winner).c_str(), Json(loser).c_str(),
                  Json(shown).c_str(), c.loser_is_delete ? "true" : "false",
                  Json(Stamp(c.detected_millis)).c_str());
    } else {
      std::printf("%s  %s  %s (%s): kept %s's, lost %s's: %s\n", Stamp(c.detected_millis).c_str(),
                  row.c_str(), column.empty() ? "row" : column.c_str(),
                  std::string(ConflictKindName(c.kind)).c_str(), winner.c_str(), loser.c_str(),
                  shown.c_str());
    }
    first = false;
  }
  if (a.json) std::printf("%s]\n", first ? "" : "\n");
  if (!a.json && conflicts->empty()) std::printf("no conflicts\n");
  return 0;
}

bool IsDatabaseUrl(std::string_view arg) {
  return arg.starts_with("sqlite:") || arg.starts_with("postgresql://") ||
         arg.starts_with("postgres://");
}

int RunDb(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    std::fputs(kDbHelp, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string& command = args[0];
  if (command == "conflicts") return RunDbConflicts(args, 1);
  Args a;
  if (auto error = Parse(args, 1, a)) return Usage(error->c_str());
  if (command == "provision") return RunProvision(a);
  if (command == "deprovision") return RunDeprovision(a);
  if (command == "sync") return RunDbSync(a);
  if (command == "status") return RunDbStatus(a);
  return Usage(("unknown db command '" + command + "'").c_str());
}

}  // namespace meshsync::cli
