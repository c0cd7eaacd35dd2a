// The node's log: one line per event on stderr, with a UTC timestamp.
// Thread-safe.
#ifndef MESHSYNC_NODE_LOG_H_
#define MESHSYNC_NODE_LOG_H_

#include <string_view>

namespace meshsync::node {

void Log(std::string_view message);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_LOG_H_
