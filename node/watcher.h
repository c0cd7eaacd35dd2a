// Watcher: tells when anything under a folder changes (inotify, every
// directory watched; new directories are added as they appear). The
// node's periodic rescan is the safety net for what inotify misses (an
// overflowed queue, a folder past the watch limit, a network file system).
#ifndef MESHSYNC_NODE_WATCHER_H_
#define MESHSYNC_NODE_WATCHER_H_

#include <functional>
#include <map>
#include <string>
#include <thread>

#include "meshsync/status.h"

namespace meshsync::node {

class Watcher {
 public:
  // Calls `on_change` (on the watcher's thread) after changes under `root`,
  // except in `skip` (a directory name at the root, e.g. ".meshsync").
  static Result<std::unique_ptr<Watcher>> Start(const std::string& root, std::string skip,
                                                std::function<void()> on_change);
  ~Watcher();

 private:
  Watcher() = default;
  void AddTree(const std::string& path);
  void Loop();

  std::string root_;
  std::string skip_;
  std::function<void()> on_change_;
  int fd_ = -1;
  int stop_fd_ = -1;
  bool full_ = false;                // out of watches: logged once
  std::map<int, std::string> dirs_;  // watch descriptor -> path
  std::thread thread_;
};

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_WATCHER_H_
