#include "node/api.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <map>

#include "node/config.h"
#include "node/json.h"

namespace meshsync::node {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr uint64_t kMaxBody = 64 << 20;     // a posted feed (FolderFeed::kMaxPostedBytes)
constexpr size_t kMaxStreamBacklog = 1000;  // events queued for a slow client before it is dropped

std::string_view Sv(beast::string_view v) { return std::string_view(v.data(), v.size()); }

bool SameKey(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;  // constant time: the key is a secret
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

class ApiServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<ApiServer> server, tcp::socket socket)
      : server_(std::move(server)), stream_(std::move(socket)) {}

  void Start() { Read(); }

  // Event stream: queue one event.
  void Push(std::string event) {
    if (queue_.size() >= kMaxStreamBacklog) {
      Close();
      return;
    }
    queue_.push_back(std::move(event));
    if (!writing_) WriteNext();
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    server_->streams_.erase(shared_from_this());
  }

 private:
  void Read() {
    parser_.emplace();
    parser_->body_limit(kMaxBody);
    stream_.expires_after(std::chrono::seconds(60));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return;  // closed, timed out or malformed: drop it
                       self->Handle(self->parser_->release());
                     });
  }

  void Reply(http::status status, std::string body, bool keep_alive,
             std::string_view content_type = "application/json") {
    auto response = std::make_shared<http::response<http::string_body>>(status, 11);
    response->set(http::field::content_type,
                  beast::string_view(content_type.data(), content_type.size()));
    response->set(http::field::cache_control, "no-store");
    response->keep_alive(keep_alive);
    response->body() = std::move(body) + "\n";
    response->prepare_payload();
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code ec, size_t) {
                        if (ec || !response->keep_alive()) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
                          return;
                        }
                        self->Read();
                      });
  }

  void Error(http::status status, const std::string& message, bool keep_alive) {
    Reply(status, "{\"error\": " + JsonString(message) + "}", keep_alive);
  }

  void Handle(http::request<http::string_body> request) {
    bool keep_alive = request.keep_alive();
    std::string_view key;
    if (auto it = request.find("X-API-Key"); it != request.end()) key = Sv(it->value());
    if (auto it = request.find(http::field::authorization); it != request.end()) {
      std::string_view value = Sv(it->value());
      if (value.starts_with("Bearer ")) key = value.substr(7);
    }
    if (!SameKey(key, server_->key_)) {
      return Error(http::status::unauthorized, "missing or wrong API key", false);
    }
    std::string_view target = Sv(request.target());
    std::string path(target.substr(0, target.find('?')));
    Request call;
    if (target.find('?') != std::string_view::npos) {
      call.query = std::string(target.substr(target.find('?') + 1));
    }
    if (request.method() == http::verb::get && path == "/api/events") return StartStream();
    std::string method(Sv(request.method_string()));
    auto route = server_->routes_.find(method + " " + path);
    if (route == server_->routes_.end()) {
      for (const char* other : {"GET ", "POST "}) {
        if (server_->routes_.contains(other + path)) {
          return Error(http::status::method_not_allowed, method + " is not served at " + path,
                       keep_alive);
        }
      }
      return Error(http::status::not_found, "no such endpoint: " + path, keep_alive);
    }
    call.body = std::move(request.body());
    // The reply may come from another thread: answer on the I/O thread.
    route->second.route(call, [self = shared_from_this(), keep_alive,
                               type = route->second.content_type](Result<std::string> body) {
      asio::post(self->stream_.get_executor(),
                 [self, keep_alive, type, body = std::move(body)]() mutable {
                   self->Answer(std::move(body), keep_alive, type);
                 });
    });
  }

  void Answer(Result<std::string> body, bool keep_alive, const std::string& content_type) {
    if (!body.ok()) {
      StatusCode code = body.status().code();
      http::status status = code == StatusCode::kNotFound          ? http::status::not_found
                            : code == StatusCode::kInvalidArgument ? http::status::bad_request
                            : code == StatusCode::kFailedPrecondition
                                ? http::status::conflict
                                : http::status::internal_server_error;
      return Error(status, std::string(body.status().message()), keep_alive);
    }
    Reply(http::status::ok, *std::move(body), keep_alive, content_type);
  }

  void StartStream() {
    stream_.expires_never();
    std::string header =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        "Connection: close\r\n\r\n: meshsync events\n\n";
    server_->streams_.insert(shared_from_this());
    Push(std::move(header));
    // Notice when the client goes away: it sends nothing more.
    auto byte = std::make_shared<char>();
    stream_.socket().async_read_some(
        asio::buffer(byte.get(), 1),
        [self = shared_from_this(), byte](beast::error_code, size_t) { self->Close(); });
  }

  void WriteNext() {
    if (queue_.empty()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    asio::async_write(stream_.socket(), asio::buffer(queue_.front()),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return self->Close();
                        self->queue_.pop_front();
                        self->WriteNext();
                      });
  }

  std::shared_ptr<ApiServer> server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> queue_;
  bool writing_ = false;
};

ApiServer::ApiServer(asio::io_context& io, std::string key)
    : io_(io), key_(std::move(key)), acceptor_(io) {}

void ApiServer::AddRoute(const std::string& method, const std::string& path, Route route,
                         std::string content_type) {
  routes_[method + " " + path] = Endpoint{std::move(route), std::move(content_type)};
}

void ApiServer::AddRoute(const std::string& path, QuickRoute route) {
  AddRoute("GET", path, [route = std::move(route)](const Request& request, Reply reply) {
    reply(route(request.query));
  });
}

Result<std::string> ApiServer::Listen(const std::string& address) {
  MESHSYNC_RETURN_IF_ERROR(CheckAddress(address));
  std::string host, port;
  SplitAddress(address, host, port);
  beast::error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (ec || !ip.is_loopback()) {
    return InvalidArgumentError("the API listens on a loopback address only, not '" + address +
                                "'");
  }
  tcp::endpoint endpoint(ip, static_cast<uint16_t>(std::stoi(port)));
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return UnavailableError("API cannot listen on " + address + ": " + ec.message());
  auto bound = acceptor_.local_endpoint();
  Accept();
  return bound.address().to_string() + ":" + std::to_string(bound.port());
}

void ApiServer::Accept() {
  acceptor_.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (ec || self->closed_) return;
    std::make_shared<Session>(self, std::move(socket))->Start();
    self->Accept();
  });
}

void ApiServer::Publish(const std::string& type, const std::string& json) {
  std::string event = "event: " + type + "\ndata: " + json + "\n\n";
  asio::post(io_, [self = shared_from_this(), event = std::move(event)] {
    auto streams = self->streams_;  // Push may close (and erase) one
    for (const auto& stream : streams) stream->Push(event);
  });
}

void ApiServer::Close() {
  closed_ = true;
  beast::error_code ignored;
  acceptor_.close(ignored);
  auto streams = streams_;
  for (const auto& stream : streams) stream->Close();
}

std::optional<std::string> QueryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    std::string_view pair = query.substr(0, query.find('&'));
    query.remove_prefix(std::min(query.size(), pair.size() + 1));
    std::string_view key = pair.substr(0, pair.find('='));
    if (key != name) continue;
    std::string_view raw = pair.size() > key.size() ? pair.substr(key.size() + 1) : "";
    std::string value;
    for (size_t i = 0; i < raw.size(); ++i) {
      auto hex = [](char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
      };
      if (raw[i] == '+') {
        value.push_back(' ');
      } else if (raw[i] == '%' && i + 2 < raw.size() && hex(raw[i + 1]) >= 0 &&
                 hex(raw[i + 2]) >= 0) {
        value.push_back(static_cast<char>(hex(raw[i + 1]) * 16 + hex(raw[i + 2])));
        i += 2;
      } else {
        value.push_back(raw[i]);
      }
    }
    return value;
  }
  return std::nullopt;
}

}  // namespace meshsync::node
