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
//   POST /api/bundle/import      applies an offline bundle (body: {"path": ...})
//   POST /api/bundle/export      writes one (body: {"folder", "for", "path"})
//   GET  /api/feed?folder=ID[&since=N]
//                                the folder as a FeedSync Atom feed (folder_feed.h)
//   POST /api/feed?folder=ID     merges a posted FeedSync feed into the folder
//
// Runs on the node's I/O thread. Quick routes answer there; the others hand
// their work to other threads and reply when it is done.
#ifndef MESHSYNC_NODE_API_H_
#define MESHSYNC_NODE_API_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "meshsync/status.h"
#include "node/asio.h"

namespace meshsync::node {

class ApiServer : public std::enable_shared_from_this<ApiServer> {
 public:
  struct Request {
    std::string query;  // after '?'
    std::string body;
  };
  // A route answers with a JSON body, or an error (kNotFound is 404,
  // kInvalidArgument 400, kFailedPrecondition 409, anything else 500).
  // Reply may be called later and from any thread, once: work that is not
  // quick (reading a store, applying a bundle) is handed to other threads.
  using Reply = std::function<void(Result<std::string>)>;
  using Route = std::function<void(const Request& request, Reply reply)>;
  using QuickRoute = std::function<Result<std::string>(const std::string& query)>;

  ApiServer(boost::asio::io_context& io, std::string key);

  // `method` is "GET" or "POST". A successful reply is sent as
  // `content_type`; errors are always JSON.
  void AddRoute(const std::string& method, const std::string& path, Route route,
                std::string content_type = "application/json");
  // A GET answered on the I/O thread at once.
  void AddRoute(const std::string& path, QuickRoute route);
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
  struct Endpoint {
    Route route;
    std::string content_type;
  };
  std::map<std::string, Endpoint> routes_;      // "METHOD /path"
  std::set<std::shared_ptr<Session>> streams_;  // open event streams
  bool closed_ = false;
};

// The value of `name` in a query string ("a=1&b=x%20y"), %-decoded; null
// when absent.
std::optional<std::string> QueryParam(std::string_view query, std::string_view name);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_API_H_
