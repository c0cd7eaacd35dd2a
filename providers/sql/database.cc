#include "sql/database.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "meshsync/record.h"

namespace meshsync::sql {

namespace fs = std::filesystem;

Result<std::string> MetadataDir(Connection& db, std::string_view url, const std::string& meta_dir) {
  if (db.dialect() == Dialect::kSqlite) {
    std::error_code ec;
    fs::path path = fs::weakly_canonical(fs::path(std::string(url.substr(7))), ec);
    if (ec) return UnavailableError(std::string(url) + ": " + ec.message());
    return path.string() + ".meshsync";
  }
  MESHSYNC_ASSIGN_OR_RETURN(std::string id, DatabaseId(db));
  std::string root = meta_dir;
  if (root.empty()) {
    if (const char* data = std::getenv("XDG_DATA_HOME"); data != nullptr && *data != '\0') {
      root = std::string(data) + "/meshsync/databases";
    } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
      root = std::string(home) + "/.local/share/meshsync/databases";
    } else {
      return FailedPreconditionError("set HOME or XDG_DATA_HOME, or pass --meta DIR");
    }
  }
  return root + "/" + id;
}

Result<std::unique_ptr<Database>> Database::Open(std::string_view url,
                                                 const DatabaseOptions& options) {
  std::unique_ptr<Database> d(new Database());
  MESHSYNC_ASSIGN_OR_RETURN(d->db_, Connect(url));
  Connection& db = *d->db_;
  MESHSYNC_RETURN_IF_ERROR(DatabaseId(db).status());
  MESHSYNC_ASSIGN_OR_RETURN(std::vector<EnrolledTable> enrolled, ListEnrolled(db));
  std::vector<EnrolledTable> scope;
  std::string scope_name = "all";
  if (options.tables.empty()) {
    scope = enrolled;
  } else {
    std::set<std::string> names(options.tables.begin(), options.tables.end());
    std::string joined;
    for (const std::string& name : names) {
      auto it = std::find_if(enrolled.begin(), enrolled.end(),
                             [&](const EnrolledTable& e) { return e.name == name; });
      if (it == enrolled.end()) {
        return NotFoundError("table '" + name + "' is not provisioned in " + db.name() +
                             "; run 'meshsync db provision' first");
      }
      scope.push_back(*it);
      joined += name;
      joined += '\0';
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(FieldHash(joined)));
    scope_name = std::string("tables-") + hex;
  }
  if (scope.empty()) return FailedPreconditionError(db.name() + " has no provisioned table");

  MESHSYNC_ASSIGN_OR_RETURN(std::string dir, MetadataDir(db, url, options.meta_dir));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create " + dir + ": " + ec.message());
  std::string lock = dir + "/" + scope_name + ".lock";
  d->lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (d->lock_fd_ < 0) return UnavailableError(lock + ": " + std::strerror(errno));
  if (flock(d->lock_fd_, LOCK_EX | (options.wait ? 0 : LOCK_NB)) != 0) {
    return UnavailableError(db.name() +
                            " is being synced by another meshsync process (pass --wait to wait)");
  }
  d->meta_path_ = dir + "/" + scope_name + ".db";
  MESHSYNC_ASSIGN_OR_RETURN(d->store_,
                            OpenSqliteStore(d->meta_path_, TableProvider::kName, SystemRandom()));
  MESHSYNC_ASSIGN_OR_RETURN(d->provider_,
                            TableProvider::Open(db, scope, d->store_->state().id.ToHex()));
  MESHSYNC_ASSIGN_OR_RETURN(d->replica_, Replica::Open(*d->store_, *d->provider_));
  return d;
}

Database::~Database() {
  // The provider rolls back an unfinished batch before the lock is let go.
  replica_.reset();
  provider_.reset();
  store_.reset();
  db_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

namespace {

Status CheckScopes(Database& a, Database& b) {
  const auto& sa = a.provider().schemas();
  const auto& sb = b.provider().schemas();
  for (const TableSchema& t : sa) {
    auto it =
        std::find_if(sb.begin(), sb.end(), [&](const TableSchema& o) { return o.name == t.name; });
    if (it == sb.end()) {
      return FailedPreconditionError("table " + t.name + " is synced by " + a.name() +
                                     " but not by " + b.name());
    }
    MESHSYNC_RETURN_IF_ERROR(CheckCompatible(t, a.name(), *it, b.name()));
  }
  for (const TableSchema& t : sb) {
    if (std::none_of(sa.begin(), sa.end(), [&](const TableSchema& o) { return o.name == t.name; }))
      return FailedPreconditionError("table " + t.name + " is synced by " + b.name() +
                                     " but not by " + a.name());
  }
  return Status::Ok();
}

}  // namespace

Result<DbSyncReport> SyncDatabases(Database& a, Database& b, const DbSyncOptions& options) {
  MESHSYNC_RETURN_IF_ERROR(CheckScopes(a, b));
  DbSyncReport report;
  SyncOptions sync;
  sync.detect_changes = false;
  sync.batch_size = options.batch_size;
  sync.on_progress = options.on_progress;
  while (true) {
    ++report.rounds;
    // The session starts while the changes found are committed (Synchronize
    // finishes the detection).
    MESHSYNC_RETURN_IF_ERROR(a.replica().StartDetectChanges().WithContext(a.name()));
    MESHSYNC_RETURN_IF_ERROR(b.replica().StartDetectChanges().WithContext(b.name()));
    SyncReport session;
    if (options.policy == DbPolicy::kKeepBoth) {
      sync.direction = options.direction;
      sync.policy = ConflictPolicy::kKeepBoth;
      MESHSYNC_ASSIGN_OR_RETURN(session, Synchronize(a.replica(), b.replica(), sync));
    } else {
      // One side's value wins: each direction with the matching policy.
      bool a_wins = options.policy == DbPolicy::kAWins;
      if (options.direction != SyncDirection::kBToA) {
        sync.direction = SyncDirection::kAToB;
        sync.policy = a_wins ? ConflictPolicy::kSourceWins : ConflictPolicy::kDestinationWins;
        MESHSYNC_ASSIGN_OR_RETURN(SyncReport r, Synchronize(a.replica(), b.replica(), sync));
        session.a_to_b = std::move(r.a_to_b);
      }
      if (options.direction != SyncDirection::kAToB) {
        sync.direction = SyncDirection::kBToA;
        sync.policy = a_wins ? ConflictPolicy::kDestinationWins : ConflictPolicy::kSourceWins;
        MESHSYNC_ASSIGN_OR_RETURN(SyncReport r, Synchronize(a.replica(), b.replica(), sync));
        session.b_to_a = std::move(r.b_to_a);
      }
    }
    report.a_to_b.Add(session.a_to_b);
    report.b_to_a.Add(session.b_to_a);
    report.problems.clear();
    auto describe = [&report](Database& dest, const DirectionReport& r) {
      for (const ItemError& e : r.errors) {
        std::string what = e.item.ToHex();
        if (auto item = dest.store().GetItem(e.item); item.ok() && *item && !(*item)->key.empty())
          what = TableProvider::DescribeKey((*item)->key);
        report.problems.push_back(dest.name() + ": " + what + ": " +
                                  std::string(e.status.message()));
      }
    };
    describe(b, session.a_to_b);
    describe(a, session.b_to_a);
    report.a_to_b.errors = session.a_to_b.errors;
    report.b_to_a.errors = session.b_to_a.errors;
    // Versions made while applying (a value the database normalised, a
    // restored row) have not reached the other side yet, and rows refused
    // because the application changed them during the session are found
    // by the next scan.
    uint64_t left = session.a_to_b.local_versions + session.b_to_a.local_versions +
                    session.a_to_b.errors.size() + session.b_to_a.errors.size();
    if (left == 0 || options.direction != SyncDirection::kTwoWay) break;
    if (report.rounds >= options.max_rounds) {
      report.problems.push_back("the databases were still changing after " +
                                std::to_string(report.rounds) + " rounds; run sync again");
      break;
    }
  }
  return report;
}

}  // namespace meshsync::sql
