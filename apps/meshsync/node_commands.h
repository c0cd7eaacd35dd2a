// meshsync id | peer | folder | daemon: a node's identity, its configuration
// (HOME/config.toml) and the daemon that serves it.
#ifndef MESHSYNC_APPS_MESHSYNC_NODE_COMMANDS_H_
#define MESHSYNC_APPS_MESHSYNC_NODE_COMMANDS_H_

#include <string>
#include <vector>

namespace meshsync::cli {

int RunId(const std::vector<std::string>& args);
int RunPeer(const std::vector<std::string>& args);
int RunFolder(const std::vector<std::string>& args);
int RunDaemon(const std::vector<std::string>& args);
int RunBundle(const std::vector<std::string>& args);
int RunConfig(const std::vector<std::string>& args);

}  // namespace meshsync::cli

#endif  // MESHSYNC_APPS_MESHSYNC_NODE_COMMANDS_H_
