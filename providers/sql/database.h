// Database: a provisioned database opened as a replica, and two-way sync of
// two of them (any pair of SQLite and PostgreSQL).
//
// A replica is a database and a scope, the set of enrolled tables it syncs
// (all of them by default, or those named with --tables). Its metadata is a
// SQLite file of its own, never in the user's database:
//   sqlite:PATH     PATH.meshsync/SCOPE.db, next to the database
//   postgresql://   META/DATABASE_ID/SCOPE.db, META being --meta or
//                   $XDG_DATA_HOME/meshsync/databases (~/.local/share/...)
// where DATABASE_ID is the id provisioning stored in the database, so the
// metadata follows the database, not the URL used to reach it. SCOPE is
// "all", or "tables-" and a hash of the sorted table names.
//
// One process syncs a scope at a time: an flock on SCOPE.lock next to the
// metadata. Another process either waits for it (wait) or fails at once,
// saying so.
#ifndef MESHSYNC_PROVIDERS_SQL_DATABASE_H_
#define MESHSYNC_PROVIDERS_SQL_DATABASE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "meshsync/sync.h"
#include "sql/connection.h"
#include "sql/table_provider.h"

namespace meshsync::sql {

struct DatabaseOptions {
  std::vector<std::string> tables;  // the scope; empty: every enrolled table
  std::string meta_dir;             // PostgreSQL metadata root; empty: the default
  bool wait = false;                // wait for another sync of this scope to end
};

class Database {
 public:
  static Result<std::unique_ptr<Database>> Open(std::string_view url,
                                                const DatabaseOptions& options);
  ~Database();

  Connection& connection() { return *db_; }
  TableProvider& provider() { return *provider_; }
  MetadataStore& store() { return *store_; }
  Replica& replica() { return *replica_; }
  const std::string& name() const { return db_->name(); }
  const std::string& metadata_path() const { return meta_path_; }

 private:
  Database() = default;
  std::unique_ptr<Connection> db_;
  std::unique_ptr<MetadataStore> store_;
  std::unique_ptr<TableProvider> provider_;
  std::unique_ptr<Replica> replica_;
  std::string meta_path_;
  int lock_fd_ = -1;
};

// Where the metadata of `url`'s scopes lives (see above); for deprovision.
Result<std::string> MetadataDir(Connection& db, std::string_view url, const std::string& meta_dir);

enum class DbPolicy { kKeepBoth, kAWins, kBWins };

struct DbSyncOptions {
  SyncDirection direction = SyncDirection::kTwoWay;
  DbPolicy policy = DbPolicy::kKeepBoth;
  size_t batch_size = 10000;  // rows per transaction
  int max_rounds = 4;
  std::function<void(const SyncProgress&)> on_progress;
};

struct DbSyncReport {
  DirectionReport a_to_b;
  DirectionReport b_to_a;
  int rounds = 0;
  std::vector<std::string> problems;  // rows that did not sync, with the reason
};

// Checks that both scopes hold the same tables with compatible columns
// (nothing is written otherwise), detects both sides' changes and syncs,
// running more rounds while a session leaves something to spread (a value a
// database normalised, a conflict resolved on one side).
Result<DbSyncReport> SyncDatabases(Database& a, Database& b, const DbSyncOptions& options);

}  // namespace meshsync::sql

#endif  // MESHSYNC_PROVIDERS_SQL_DATABASE_H_
