// JSON text for the CLI's --json output and the node's API.
#ifndef MESHSYNC_NODE_JSON_H_
#define MESHSYNC_NODE_JSON_H_

#include <string>
#include <string_view>

namespace meshsync::node {

// A JSON string literal: valid UTF-8 passes through, other bytes (a file
// name that is not UTF-8) become \u00XX, so the output is always valid.
std::string JsonString(std::string_view s);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_JSON_H_
