#include "node/watcher.h"

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "node/log.h"

namespace meshsync::node {
namespace {

constexpr uint32_t kEvents = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM |
                             IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_ONLYDIR;

}  // namespace

Result<std::unique_ptr<Watcher>> Watcher::Start(const std::string& root, std::string skip,
                                                std::function<void()> on_change) {
  std::unique_ptr<Watcher> w(new Watcher());
  w->root_ = root;
  w->skip_ = std::move(skip);
  w->on_change_ = std::move(on_change);
  w->fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  w->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->fd_ < 0 || w->stop_fd_ < 0) {
    return UnavailableError(std::string("inotify: ") + std::strerror(errno));
  }
  w->AddTree(root);
  w->thread_ = std::thread([raw = w.get()] { raw->Loop(); });
  return w;
}

Watcher::~Watcher() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (::write(stop_fd_, &one, sizeof(one)) < 0) {
      // The thread polls with a timeout too; it will notice stop anyway.
    }
    thread_.join();
  }
  if (fd_ >= 0) ::close(fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void Watcher::AddTree(const std::string& path) {
  int wd = inotify_add_watch(fd_, path.c_str(), kEvents);
  if (wd < 0) {
    if ((errno == ENOSPC || errno == ENOMEM) && !full_) {
      full_ = true;
      Log("watch: out of inotify watches at " + path +
          "; changes below it are found by the periodic rescan");
    }
    return;
  }
  dirs_[wd] = path;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return;
  while (struct dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (path == root_ && name == skip_) continue;
    if (entry->d_type == DT_DIR) AddTree(path + "/" + name);
  }
  closedir(dir);
}

void Watcher::Loop() {
  alignas(inotify_event) char buffer[64 * 1024];
  while (true) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int ready = poll(fds, 2, 1000);
    if (ready < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if (ready <= 0 || fds[0].revents == 0) continue;
    bool changed = false;
    while (true) {
      ssize_t n = ::read(fd_, buffer, sizeof(buffer));
      if (n <= 0) break;
      for (char* at = buffer; at < buffer + n;) {
        auto* event = reinterpret_cast<inotify_event*>(at);
        at += sizeof(inotify_event) + event->len;
        if (event->mask & IN_Q_OVERFLOW) {
          changed = true;
          continue;
        }
        if (event->mask & IN_IGNORED) {
          dirs_.erase(event->wd);
          continue;
        }
        auto dir = dirs_.find(event->wd);
        if (dir == dirs_.end()) continue;
        std::string name = event->len > 0 ? std::string(event->name) : std::string();
        if (dir->second == root_ && name == skip_) continue;
        changed = true;
        if ((event->mask & IN_ISDIR) && (event->mask & (IN_CREATE | IN_MOVED_TO))) {
          AddTree(dir->second + "/" + name);
        }
      }
    }
    if (changed) on_change_();
  }
}

}  // namespace meshsync::node
