#ifndef MESHSYNC_APPS_MESHSYNC_DEMO_H_
#define MESHSYNC_APPS_MESHSYNC_DEMO_H_

#include <string>
#include <vector>

namespace meshsync::cli {

// `meshsync demo [--dir DIR] [--quiet]`: three devices keep a contact list
// in sync through a hub, with offline edits, a merge, a conflict and an edit
// that beats a delete. Returns the process exit code.
int RunDemo(const std::vector<std::string>& args);

}  // namespace meshsync::cli

#endif  // MESHSYNC_APPS_MESHSYNC_DEMO_H_
