// Node: the daemon. Keeps the folders in its configuration in sync with the
// peers they are shared with, over authenticated TLS connections, live.
//
// Threads: one I/O thread runs every socket (Connection), a small pool
// answers peers' requests (SessionServer, from metadata snapshots), and one
// thread per folder does all of that folder's writing: scanning it when the
// watcher or the periodic rescan says so, and pulling from each peer that
// announced changes. A folder's changes, found or pulled, are announced to
// its other peers (IndexChanged), which is how a change travels A -> B -> C
// and through a hub.
#ifndef MESHSYNC_NODE_NODE_H_
#define MESHSYNC_NODE_NODE_H_

#include <memory>
#include <string>

#include "meshsync/status.h"

namespace meshsync::node {

class Node {
 public:
  // Loads HOME (identity, config.toml), binds the listening address and
  // opens every folder. Errors name what is wrong.
  static Result<std::unique_ptr<Node>> Open(const std::string& home);
  ~Node();

  // Serves until SIGTERM or SIGINT (or Stop()), then stops cleanly: running
  // sessions end after their current batch, so nothing is half-applied.
  Status Run();
  void Stop();

  class Impl;

 private:
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_NODE_H_
