// The node's REST API and event stream, on a loopback address, for the CLI
// and the dashboard. Every request carries the node's API key (header
// "X-API-Key: KEY" or "Authorization: Bearer KEY"); see docs/api.yaml.
//
//   GET /api/status              the node: id, name, uptime, counts
//   GET /api/folders             folders, their peers and pending invitations
//   GET /api/peers               peers and whether they are connected
//   GET /api/conflicts?folder=ID the folder's conflict log
//   GET /api/activity            the recent activity (newest last)
//   GET /api/events              Server-Sent Events: each activity as it happens
//
// Runs on the node's I/O thread. Handlers run there too, so they must be
// quick and must not touch a folder's store (conflicts are read from a
// snapshot).
#ifndef MESHSYNC_NODE_API_H_
#define MESHSYNC_NODE_API_H_

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "meshsync/status.h"
#include "node/asio.h"

namespace meshsync::node {

class ApiServer : public std::enable_shared_from_this<ApiServer> {
 public:
  // A route answers with a JSON body, or an error (kNotFound is 404,
  // kInvalidArgument 400, anything else 500).
  using Route = std::function<Result<std::string>(const std::string& query)>;

  ApiServer(boost::asio::io_context& io, std::string key);

  void AddRoute(const std::string& path, Route route);
  // Binds a loopback address ("127.0.0.1:PORT", port 0 for any); returns
  // the bound one. A non-loopback address is refused: the key is sent in
  // clear.
  Result<std::string> Listen(const std::string& address);
  // Sends `json` to every event-stream client as one event. Any thread.
  void Publish(const std::string& type, const std::string& json);
  void Close();  // I/O thread

  class Session;

 private:
  friend class Session;
  void Accept();

  boost::asio::io_context& io_;
  std::string key_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::map<std::string, Route> routes_;
  std::set<std::shared_ptr<Session>> streams_;  // open event streams
  bool closed_ = false;
};

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_API_H_
