// meshsync db ...: relational tables (SQLite, PostgreSQL) in multi-master sync.
#ifndef MESHSYNC_APPS_MESHSYNC_DB_COMMANDS_H_
#define MESHSYNC_APPS_MESHSYNC_DB_COMMANDS_H_

#include <string>
#include <string_view>
#include <vector>

namespace meshsync::cli {

// args[0] is the db command (provision, sync...).
int RunDb(const std::vector<std::string>& args);
// `meshsync conflicts URL`: args[from] onwards are the URL and options.
int RunDbConflicts(const std::vector<std::string>& args, size_t from);
// Whether a command-line argument names a database rather than a folder.
bool IsDatabaseUrl(std::string_view arg);

}  // namespace meshsync::cli

#endif  // MESHSYNC_APPS_MESHSYNC_DB_COMMANDS_H_
