// JSON text for the CLI's --json output and the node's API.
#ifndef MESHSYNC_NODE_JSON_H_
#define MESHSYNC_NODE_JSON_H_

#include <string>
#include <string_view>

#include "meshsync/status.h"

namespace meshsync::node {

// A JSON string literal: valid UTF-8 passes through, other bytes (a file
// name that is not UTF-8) become \u00XX, so the output is always valid.
std::string JsonString(std::string_view s);

// The string value of `field` in a flat JSON object such as
// {"path": "/x/y.bundle"}: enough for the API's request bodies. Escapes
// are decoded (\uXXXX as UTF-8, surrogate pairs included); anything else
// (a missing field, a value that is not a string) is kInvalidArgument.
Result<std::string> JsonStringField(std::string_view json, std::string_view field);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_JSON_H_
