#include "node/api_client.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fstream>
#include <sstream>

#include "node/asio.h"
#include "node/config.h"
#include "node/json.h"

namespace meshsync::node {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

bool DaemonRunning(const std::string& home) {
  return CallApi(home, "GET", "/api/status", {}, std::chrono::seconds(5)).ok();
}

Result<std::string> CallApi(const std::string& home, const std::string& method,
                            const std::string& target, const std::string& body,
                            std::chrono::seconds timeout) {
  std::string address = ReadLine(home + "/api-listening");
  if (address.empty()) return UnavailableError("no daemon is running on " + home);
  MESHSYNC_ASSIGN_OR_RETURN(Config config, Config::Load(home + "/config.toml"));
  std::string host, port;
  SplitAddress(address, host, port);
  try {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(5));
    tcp::resolver resolver(io);
    stream.connect(resolver.resolve(host, port));
    http::request<http::string_body> request(method == "POST" ? http::verb::post : http::verb::get,
                                             target, 11);
    request.set(http::field::host, host);
    request.set("X-API-Key", config.api_key);
    if (!body.empty()) request.set(http::field::content_type, "application/json");
    request.body() = body;
    request.prepare_payload();
    http::write(stream, request);
    stream.expires_after(timeout);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    std::string text = response.body();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    if (response.result() == http::status::ok) return text;
    std::string message = "the daemon answered " + std::to_string(response.result_int());
    if (auto error = JsonStringField(text, "error"); error.ok()) message = *error;
    switch (response.result()) {
      case http::status::not_found:
        return NotFoundError(message);
      case http::status::bad_request:
        return InvalidArgumentError(message);
      case http::status::conflict:
        return FailedPreconditionError(message);
      default:
        return UnavailableError(message);
    }
  } catch (const std::exception& e) {
    return UnavailableError("no daemon answers at " + address + " (" + e.what() + ")");
  }
}

}  // namespace meshsync::node
