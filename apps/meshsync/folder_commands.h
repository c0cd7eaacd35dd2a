// The folder commands: sync, status, conflicts, trash.
#ifndef MESHSYNC_APPS_MESHSYNC_FOLDER_COMMANDS_H_
#define MESHSYNC_APPS_MESHSYNC_FOLDER_COMMANDS_H_

#include <string>
#include <vector>

namespace meshsync::cli {

int RunSync(const std::vector<std::string>& args);
int RunStatus(const std::vector<std::string>& args);
int RunConflicts(const std::vector<std::string>& args);
int RunTrash(const std::vector<std::string>& args);

}  // namespace meshsync::cli

#endif  // MESHSYNC_APPS_MESHSYNC_FOLDER_COMMANDS_H_
