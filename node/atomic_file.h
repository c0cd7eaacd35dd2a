// Writes a small file so that readers see the old content or the new, never
// a part: a temporary file, flushed, renamed over the old one.
#ifndef MESHSYNC_NODE_ATOMIC_FILE_H_
#define MESHSYNC_NODE_ATOMIC_FILE_H_

#include <sys/types.h>

#include <string>
#include <string_view>

#include "meshsync/status.h"

namespace meshsync::node {

Status WriteFileAtomically(const std::string& path, std::string_view text, mode_t mode = 0600);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_ATOMIC_FILE_H_
