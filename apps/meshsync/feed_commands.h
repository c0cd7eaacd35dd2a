// The feed commands: FeedSync feeds merged, edited and synced from the shell.
#ifndef MESHSYNC_APPS_MESHSYNC_FEED_COMMANDS_H_
#define MESHSYNC_APPS_MESHSYNC_FEED_COMMANDS_H_

#include <string>
#include <vector>

namespace meshsync::cli {

// meshsync feed merge|show|create|update|delete|resolve|sync ...
int RunFeed(const std::vector<std::string>& args);

}  // namespace meshsync::cli

#endif  // MESHSYNC_APPS_MESHSYNC_FEED_COMMANDS_H_
