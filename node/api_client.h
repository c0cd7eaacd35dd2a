// The CLI's side of the node's API: requests to the daemon running on a
// home, found through HOME/api-listening and authenticated with the key in
// HOME/config.toml.
#ifndef MESHSYNC_NODE_API_CLIENT_H_
#define MESHSYNC_NODE_API_CLIENT_H_

#include <chrono>
#include <string>

#include "meshsync/status.h"

namespace meshsync::node {

// Whether a daemon answers on `home`'s API address.
bool DaemonRunning(const std::string& home);

// Sends one request; returns the JSON body of a 200 answer. An error answer
// becomes a Status with the daemon's message (404 kNotFound, 400
// kInvalidArgument, 409 kFailedPrecondition, others kUnavailable);
// kUnavailable when no daemon answers, or when the answer has not come
// within `timeout` (a daemon that hangs does not hang the CLI).
Result<std::string> CallApi(const std::string& home, const std::string& method,
                            const std::string& target, const std::string& body = {},
                            std::chrono::seconds timeout = std::chrono::seconds(60));

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_API_CLIENT_H_
