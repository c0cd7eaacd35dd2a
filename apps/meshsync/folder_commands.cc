#include "folder_commands.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>

#include "cli_util.h"
#include "files/folder.h"

namespace meshsync::cli {
namespace {

namespace fs = std::filesystem;
using files::Folder;
using files::FolderOptions;

std::string Bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// A one-line progress bar on a terminal, shown once a sync has run for a
// second; nothing at all when stderr is not a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(Folder& a, Folder& b)
      : a_(a), b_(b), enabled_(isatty(STDERR_FILENO) == 1), start_(Clock::now()) {}
  ~ProgressBar() { Finish(); }

  void Update(const SyncProgress& p) {
    if (!enabled_) return;
    double elapsed = Seconds();
    if (elapsed < 1.0) return;
    uint64_t bytes = a_.provider().counters().bytes_copied + b_.provider().counters().bytes_copied;
    double rate = static_cast<double>(bytes) / elapsed;
    double fraction = p.items_total == 0
                          ? 1.0
                          : static_cast<double>(p.items_done) / static_cast<double>(p.items_total);
    double eta = fraction > 0 ? elapsed / fraction - elapsed : 0;
    int width = 24;
    int filled = static_cast<int>(fraction * width);
    std::string bar(static_cast<size_t>(filled), '=');
    bar.resize(static_cast<size_t>(width), ' ');
    std::fprintf(stderr, "\r%s [%s] %" PRIu64 "/%" PRIu64 " files  %s  %s/s  ETA %.0fs   ",
                 p.a_to_b ? "A->B" : "B->A", bar.c_str(), p.items_done, p.items_total,
                 Bytes(bytes).c_str(), Bytes(static_cast<uint64_t>(rate)).c_str(), eta);
    std::fflush(stderr);
    shown_ = true;
  }
  void Finish() {
    if (shown_) std::fputs("\r\033[K", stderr);
    shown_ = false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  Folder& a_;
  Folder& b_;
  bool enabled_;
  bool shown_ = false;
  Clock::time_point start_;
};

void PrintDirection(const char* label, const files::FolderDirection& d) {
  const DirectionReport& r = d.engine;
  std::printf("%s: %" PRIu64 " created, %" PRIu64 " updated, %" PRIu64 " deleted, %" PRIu64
              " moved, %" PRIu64 " conflicts, %s copied\n",
              label, r.created, r.updated > d.moved ? r.updated - d.moved : 0, r.deleted, d.moved,
              r.conflicts, Bytes(d.bytes_copied).c_str());
}

std::string JsonDirection(const files::FolderDirection& d) {
  const DirectionReport& r = d.engine;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"created\": %" PRIu64 ", \"updated\": %" PRIu64 ", \"deleted\": %" PRIu64
                ", \"moved\": %" PRIu64 ", \"conflicts\": %" PRIu64
                ", \"conflict_copies\": %" PRIu64 ", \"bytes_transferred\": %" PRIu64
                ", \"skipped\": %" PRIu64 "}",
                r.created, r.updated > d.moved ? r.updated - d.moved : 0, r.deleted, d.moved,
                r.conflicts, r.conflict_copies, d.bytes_copied, r.skipped);
  return buf;
}

}  // namespace

int RunSync(const std::vector<std::string>& args) {
  FolderOptions folder_options;
  files::FolderSyncOptions options;
  bool json = false, verbose = false;
  std::vector<std::string> dirs;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--preview" || arg == "-n") {
      folder_options.preview = true;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--fsync") {
      folder_options.fsync = true;
    } else if (arg == "-v" || arg == "--verbose") {
      verbose = true;
    } else if (arg == "--policy" && i + 1 < args.size()) {
      const std::string& p = args[++i];
      if (p == "keep-both") {
        options.policy = files::FolderPolicy::kKeepBoth;
      } else if (p == "newer") {
        options.policy = files::FolderPolicy::kNewer;
      } else if (p == "a-wins") {
        options.policy = files::FolderPolicy::kAWins;
      } else if (p == "b-wins") {
        options.policy = files::FolderPolicy::kBWins;
      } else {
        return Usage("--policy must be keep-both, newer, a-wins or b-wins");
      }
    } else if (arg == "--ignore" && i + 1 < args.size()) {
      folder_options.ignore.push_back(args[++i]);
    } else if (arg == "--batch" && i + 1 < args.size()) {
      options.batch_size = std::strtoul(args[++i].c_str(), nullptr, 10);
      if (options.batch_size == 0) return Usage("--batch must be a positive number");
    } else if (!arg.empty() && arg[0] == '-') {
      return Usage(("unknown option " + arg).c_str());
    } else {
      dirs.push_back(arg);
    }
  }
  if (dirs.size() != 2) return Usage("sync needs two folders: meshsync sync DIR_A DIR_B");
  if (Status paths = files::CheckPaths(dirs[0], dirs[1]); !paths.ok()) return Fail(paths);
  auto a = Folder::Open(dirs[0], folder_options);
  if (!a.ok()) return Fail(a.status());
  auto b = Folder::Open(dirs[1], folder_options);
  if (!b.ok()) return Fail(b.status());
  if (Status pair = files::CheckPair(**a, **b); !pair.ok()) return Fail(pair);
  ProgressBar bar(**a, **b);
  options.on_progress = [&bar](const SyncProgress& p) { bar.Update(p); };
  auto report = files::SyncFolders(**a, **b, options);
  bar.Finish();
  if (!report.ok()) return Fail(report.status());

  if (folder_options.preview || verbose) {
    auto print = [&](Folder& where, const char* arrow) {
      for (const files::FileAction& action : where.provider().actions()) {
        if (json) continue;
        std::printf("%s %-14s %s%s%s\n", arrow, action.verb.c_str(), action.path.c_str(),
                    action.detail.empty() ? "" : "  (",
                    action.detail.empty() ? "" : (action.detail + ")").c_str());
      }
    };
    print(**b, "A->B");
    print(**a, "B->A");
  }
  if (json) {
    std::printf(
        "{\"a\": %s, \"b\": %s, \"preview\": %s, \"a_to_b\": %s, \"b_to_a\": %s, "
        "\"rounds\": %d, \"in_sync\": %s, \"errors\": [",
        Json((*a)->path()).c_str(), Json((*b)->path()).c_str(),
        folder_options.preview ? "true" : "false", JsonDirection(report->a_to_b).c_str(),
        JsonDirection(report->b_to_a).c_str(), report->rounds,
        report->problems.empty() && !report->cancelled ? "true" : "false");
    for (size_t i = 0; i < report->problems.size(); ++i) {
      std::printf("%s%s", i == 0 ? "" : ", ", Json(report->problems[i]).c_str());
    }
    std::printf("]}\n");
  } else {
    if (!folder_options.preview) {
      PrintDirection("A->B", report->a_to_b);
      PrintDirection("B->A", report->b_to_a);
    }
    for (const std::string& problem : report->problems) {
      std::fprintf(stderr, "not synced: %s\n", problem.c_str());
    }
    if (!folder_options.preview) {
      if (report->problems.empty()) {
        std::printf("in sync\n");
      } else {
        std::printf("%zu item(s) not synced\n", report->problems.size());
      }
    }
  }
  int code = 0;
  if (!report->problems.empty()) {
    std::fprintf(stderr, "meshsync: %zu item(s) could not be synced\n", report->problems.size());
    code = 1;
  }
  // Done. The metadata is closed and the locks released; the indexes of
  // both folders are left to the end of the process rather than freed item
  // by item (a tenth of a no-change sync of 100,000 files).
  (*a)->Close();
  (*b)->Close();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

int RunStatus(const std::vector<std::string>& args) {
  if (args.size() != 1) return Usage("usage: meshsync status DIR");
  FolderOptions options;
  options.preview = true;  // look, change nothing
  struct stat st;
  std::string meta = args[0] + "/.meshsync/meta.db";
  bool known = stat(meta.c_str(), &st) == 0;
  auto folder = Folder::Open(args[0], options);
  if (!folder.ok()) return Fail(folder.status());
  Folder& f = **folder;
  if (Status s = f.provider().LoadItems(); !s.ok()) return Fail(s);
  auto before = f.provider().CountItems();
  Tick tick = f.replica().state().tick;
  if (Status s = f.replica().DetectChanges(); !s.ok()) return Fail(s);
  bool changed = f.replica().state().tick != tick;
  auto conflicts = f.store().ListConflicts();
  if (!conflicts.ok()) return Fail(conflicts.status());
  std::printf("folder:     %s\n", f.real_path().c_str());
  if (!known) {
    std::printf("replica:    none yet (the folder becomes a replica on its first sync)\n");
  } else {
    std::printf("replica:    %s\n", f.replica().id().ToHex().c_str());
    std::printf("synced:     %" PRIu64 " files, %" PRIu64 " folders, %" PRIu64 " symlinks, %s\n",
                before.files, before.directories, before.symlinks, Bytes(before.bytes).c_str());
    std::printf("knowledge:  %s\n", f.replica().state().knowledge.ToString().c_str());
  }
  std::printf("changes:    %s\n",
              changed ? "local changes since the last sync" : "none since the last sync");
  std::printf("conflicts:  %zu logged (see 'meshsync conflicts %s')\n", conflicts->size(),
              args[0].c_str());
  uint64_t trash_files = 0, trash_bytes = 0;
  std::error_code ec;
  fs::path trash = fs::path(args[0]) / ".meshsync" / "trash";
  if (fs::is_directory(trash, ec)) {
    for (auto it = fs::recursive_directory_iterator(trash, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file(ec)) {
        ++trash_files;
        trash_bytes += it->file_size(ec);
      }
    }
  }
  std::printf("trash:      %" PRIu64 " files, %s (kept 30 days)\n", trash_files,
              Bytes(trash_bytes).c_str());
  for (const std::string& p : f.provider().problems()) std::printf("problem:    %s\n", p.c_str());
  return 0;
}

int RunConflicts(const std::vector<std::string>& args) {
  bool json = false;
  std::vector<std::string> dirs;
  for (const std::string& arg : args) {
    if (arg == "--json") {
      json = true;
    } else if (!arg.empty() && arg[0] == '-') {
      return Usage(("unknown option " + arg).c_str());
    } else {
      dirs.push_back(arg);
    }
  }
  if (dirs.size() != 1) return Usage("usage: meshsync conflicts DIR [--json]");
  FolderOptions options;
  options.preview = true;
  auto folder = Folder::Open(dirs[0], options);
  if (!folder.ok()) return Fail(folder.status());
  Folder& f = **folder;
  if (Status s = f.provider().LoadItems(); !s.ok()) return Fail(s);
  auto conflicts = f.store().ListConflicts();
  if (!conflicts.ok()) return Fail(conflicts.status());
  const ReplicaKeyMap& keys = f.replica().state().keys;
  auto unit_name = [](ChangeUnitId unit) -> std::string {
    switch (unit) {
      case 0:
        return "item";
      case files::kContentUnit:
        return "content";
      case files::kPlacementUnit:
        return "name";
      case files::kAttributesUnit:
        return "permissions";
    }
    return std::to_string(unit);
  };
  if (json) std::printf("[");
  bool first = true;
  for (const ConflictRecord& c : *conflicts) {
    std::string path = f.provider().PathOf(c.item).value_or("(deleted " + c.item.ToHex() + ")");
    ReplicaId loser = keys.IdOf(c.loser.replica);
    ReplicaId winner = keys.IdOf(c.winner.replica);
    std::optional<std::string> copy =
        f.provider().PathOf(ConflictCopyId(c.item, loser, c.loser.tick));
    std::string what = std::string(ConflictKindName(c.kind));
    if (json) {
      std::printf("%s\n  {\"id\": %" PRIu64
                  ", \"path\": %s, \"unit\": %s, \"kind\": %s, "
                  "\"winner\": %s, \"loser\": %s, \"loser_deleted\": %s, \"deferred\": %s, "
                  "\"detected\": %s, \"copy\": %s}",
                  first ? "" : ",", c.id, Json(path).c_str(), Json(unit_name(c.unit)).c_str(),
                  Json(what).c_str(), Json(winner.ShortName()).c_str(),
                  Json(loser.ShortName()).c_str(), c.loser_is_delete ? "true" : "false",
                  c.deferred ? "true" : "false", Json(Stamp(c.detected_millis)).c_str(),
                  copy ? Json(*copy).c_str() : "null");
    } else {
      std::printf("%s  %s  %s (%s): kept %s's, lost %s's%s%s\n", Stamp(c.detected_millis).c_str(),
                  path.c_str(), unit_name(c.unit).c_str(), what.c_str(), winner.ShortName().c_str(),
                  loser.ShortName().c_str(), c.loser_is_delete ? " deletion" : " edit",
                  copy ? (" -> " + *copy).c_str() : "");
    }
    first = false;
  }
  if (json) std::printf("%s]\n", first ? "" : "\n");
  if (!json && conflicts->empty()) std::printf("no conflicts\n");
  return 0;
}

int RunTrash(const std::vector<std::string>& args) {
  if (args.size() < 2) {
    return Usage("usage: meshsync trash list DIR | meshsync trash restore DIR PATH [--from STAMP]");
  }
  const std::string& verb = args[0];
  fs::path root = args[1];
  fs::path trash = root / ".meshsync" / "trash";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return Fail(NotFoundError(args[1] + ": not a folder"));
  // stamp -> relative paths
  std::map<std::string, std::vector<std::pair<std::string, uint64_t>>> entries;
  if (fs::is_directory(trash, ec)) {
    for (const auto& stamp : fs::directory_iterator(trash, ec)) {
      for (auto it = fs::recursive_directory_iterator(stamp.path(), ec);
           it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_directory(ec) && !it->is_symlink(ec)) continue;
        entries[stamp.path().filename().string()].emplace_back(
            fs::relative(it->path(), stamp.path(), ec).string(),
            it->is_symlink(ec) ? 0 : it->file_size(ec));
      }
    }
  }
  if (verb == "list") {
    if (args.size() != 2) return Usage("usage: meshsync trash list DIR");
    for (const auto& [stamp, list] : entries) {
      for (const auto& [path, size] : list) {
        std::printf("%s  %s  %s\n", stamp.c_str(), path.c_str(), Bytes(size).c_str());
      }
    }
    if (entries.empty()) std::printf("the trash is empty\n");
    return 0;
  }
  if (verb != "restore" || args.size() < 3)
    return Usage("usage: meshsync trash restore DIR PATH [--from STAMP]");
  std::string want = args[2];
  std::string from;
  if (args.size() == 5 && args[3] == "--from") {
    from = args[4];
  } else if (args.size() != 3) {
    return Usage("usage: meshsync trash restore DIR PATH [--from STAMP]");
  }
  if (want.empty() || want[0] == '/' || want.find("..") != std::string::npos) {
    return Fail(InvalidArgumentError("PATH must be relative to the folder, without '..'"));
  }
  // The newest trashed version (or the one from STAMP); "x.1" names a second
  // version trashed in the same run.
  std::string stamp;
  for (auto it = entries.rbegin(); it != entries.rend() && stamp.empty(); ++it) {
    if (!from.empty() && it->first != from) continue;
    for (const auto& [path, size] : it->second) {
      if (path == want) stamp = it->first;
    }
  }
  if (stamp.empty()) return Fail(NotFoundError(want + " is not in the trash"));
  fs::path source = trash / stamp / want;
  fs::path target = root / want;
  if (fs::exists(fs::symlink_status(target, ec))) {
    target = root / (want + ".restored-" + stamp);
  }
  fs::create_directories(target.parent_path(), ec);
  if (ec) return Fail(UnavailableError(target.parent_path().string() + ": " + ec.message()));
  fs::rename(source, target, ec);
  if (ec) return Fail(UnavailableError("cannot restore " + want + ": " + ec.message()));
  std::printf("restored %s (deleted %s) to %s; the next sync shares it\n", want.c_str(),
              stamp.c_str(), target.string().c_str());
  return 0;
}

}  // namespace meshsync::cli
