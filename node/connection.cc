#include "node/connection.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <cstdio>
#include <optional>

#include "node/log.h"

namespace meshsync::node {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

constexpr auto kKeepalive = std::chrono::seconds(20);  // ping when idle this long
constexpr auto kDeadPeer = std::chrono::seconds(70);   // close when silent this long

}  // namespace

Result<std::shared_ptr<asio::ssl::context>> MakeTlsContext(const Identity& identity, bool server) {
  auto context = std::make_shared<asio::ssl::context>(server ? asio::ssl::context::tls_server
                                                             : asio::ssl::context::tls_client);
  SSL_CTX* ctx = context->native_handle();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_use_certificate_file(ctx, identity.cert_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, identity.key_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return FailedPreconditionError("cannot load the node's certificate and key from " +
                                   identity.cert_path);
  }
  // Peers present self-signed certificates: any is accepted by TLS, and the
  // node then checks its key against the device ids it trusts.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     [](int, X509_STORE_CTX*) { return 1; });
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  return context;
}

Result<DeviceId> PeerDeviceId(TlsStream& stream) {
  X509* cert = SSL_get0_peer_certificate(stream.native_handle());
  if (cert == nullptr) return FailedPreconditionError("peer presented no certificate");
  return DeviceId::OfCertificate(cert);
}

Connection::Connection(std::shared_ptr<TlsStream> stream, DeviceId peer, bool outgoing)
    : stream_(std::move(stream)),
      peer_(peer),
      outgoing_(outgoing),
      keepalive_(stream_->get_executor()) {
  boost::system::error_code ec;
  auto endpoint = stream_->lowest_layer().remote_endpoint(ec);
  if (!ec) remote_ = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

Connection::~Connection() = default;

void Connection::Start(Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  last_read_ = last_write_ = Clock::now();
  boost::system::error_code ignored;
  stream_->lowest_layer().set_option(asio::ip::tcp::no_delay(true), ignored);
  ReadHeader();
  Tick();
}

void Connection::Send(const wire::Envelope& envelope) {
  if (closed_) return;
  auto frame = EncodeFrame(envelope);
  if (!frame.ok()) {
    Close(frame.status());
    return;
  }
  Queue(SplitFrame{std::move(*frame), {}});
}

void Connection::Send(wire::Envelope&& envelope) {
  if (closed_) return;
  Queue(EncodeSplitFrame(std::move(envelope)));
}

void Connection::Queue(Result<SplitFrame> frame) {
  if (!frame.ok()) {
    Close(frame.status());
    return;
  }
  asio::post(stream_->get_executor(),
             [self = shared_from_this(), frame = std::move(*frame)]() mutable {
               if (self->shutting_down_) return;
               self->queue_.push_back(std::move(frame));
               if (!self->writing_) self->Write();
             });
}

std::future<Result<wire::Response>> Connection::CallAsync(wire::Request request) {
  std::promise<Result<wire::Response>> promise;
  auto future = promise.get_future();
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    if (closed_) {
      promise.set_value(UnavailableError("connection to " + peer_.ShortName() + " is closed"));
      return future;
    }
    request.set_id(next_call_++);
    calls_.emplace(request.id(), std::move(promise));
  }
  wire::Envelope envelope;
  *envelope.mutable_request() = std::move(request);
  Send(envelope);
  return future;
}

Result<wire::Response> Connection::Call(wire::Request request, std::chrono::milliseconds timeout) {
  auto future = CallAsync(std::move(request));
  if (future.wait_for(timeout) != std::future_status::ready) {
    Close(UnavailableError("peer did not answer within " + std::to_string(timeout.count() / 1000) +
                           " s"));
  }
  return future.get();  // Close() answers every waiting call
}

void Connection::Close(const Status& reason) {
  asio::post(stream_->get_executor(),
             [self = shared_from_this(), reason]() { self->Shutdown(reason); });
}

void Connection::ReadHeader() {
  asio::async_read(
      *stream_, asio::buffer(header_, sizeof(header_)),
      [self = shared_from_this()](boost::system::error_code ec, size_t) {
        if (ec) {
          if (self->shutting_down_) return;
          self->Shutdown(UnavailableError(
              ec == asio::error::eof ? std::string("peer closed the connection") : ec.message()));
          return;
        }
        uint8_t flags = 0;
        auto size =
            DecodeFrameHeader(std::string_view(self->header_, sizeof(self->header_)), flags);
        if (!size.ok()) {
          self->Shutdown(size.status());
          return;
        }
        if ((flags & kFlagData) != 0) {
          self->ReadDataPrefix(*size, flags & ~kFlagData);
        } else {
          self->ReadBody(*size, flags);
        }
      });
}

template <typename Then>
void Connection::ReadRest(asio::mutable_buffer buffer, Then then) {
  asio::async_read(*stream_, buffer,
                   [self = shared_from_this(), then = std::move(then)](boost::system::error_code ec,
                                                                       size_t) mutable {
                     if (ec) {
                       if (self->shutting_down_) return;
                       self->Shutdown(UnavailableError("truncated message: " + ec.message()));
                       return;
                     }
                     self->last_read_ = Clock::now();
                     then();
                   });
}

void Connection::ReadBody(size_t size, uint8_t flags) {
  body_.resize(size);
  ReadRest(asio::buffer(body_.data(), body_.size()), [this, flags] {
    wire::Envelope envelope;
    Status status = DecodeFrameBody(body_, flags, envelope);
    Deliver(std::move(status), std::move(envelope));
  });
}

void Connection::ReadDataPrefix(size_t size, uint8_t flags) {
  ReadRest(asio::buffer(data_prefix_, sizeof(data_prefix_)), [this, size, flags] {
    auto message = DecodeDataPrefix(std::string_view(data_prefix_, sizeof(data_prefix_)), size);
    if (!message.ok()) {
      Shutdown(message.status());
      return;
    }
    ReadDataMessage(*message, size - kDataPrefixSize - *message, flags);
  });
}

void Connection::ReadDataMessage(size_t message, size_t data, uint8_t flags) {
  body_.resize(message);
  ReadRest(asio::buffer(body_.data(), body_.size()), [this, data, flags] {
    data_.resize(data);
    ReadData(flags);
  });
}

// The data goes straight into the string the message will own.
void Connection::ReadData(uint8_t flags) {
  ReadRest(asio::buffer(data_.data(), data_.size()), [this, flags] {
    wire::Envelope envelope;
    Status status = DecodeDataMessage(body_, flags, std::move(data_), envelope);
    data_ = std::string();
    Deliver(std::move(status), std::move(envelope));
  });
}

void Connection::Deliver(Status decoded, wire::Envelope&& envelope) {
  body_.clear();
  body_.shrink_to_fit();
  if (!decoded.ok()) {
    Shutdown(decoded);
    return;
  }
  Dispatch(std::move(envelope));
  if (!shutting_down_) ReadHeader();
}

void Connection::Dispatch(wire::Envelope&& envelope) {
  if (envelope.has_ping()) return;
  if (envelope.has_close()) {
    Shutdown(UnavailableError("peer closed the connection: " + envelope.close().reason()));
    return;
  }
  if (envelope.has_response()) {
    std::optional<std::promise<Result<wire::Response>>> promise;
    {
      std::lock_guard<std::mutex> lock(calls_mu_);
      auto it = calls_.find(envelope.response().id());
      if (it != calls_.end()) {
        promise = std::move(it->second);
        calls_.erase(it);
      }
    }
    if (!promise.has_value()) {
      Shutdown(InvalidArgumentError("peer sent a response to no request"));
    } else if (envelope.response().has_error() && envelope.response().error().code() != 0) {
      promise->set_value(
          StatusFromWire(envelope.response().error()).WithContext("peer " + peer_.ShortName()));
    } else {
      promise->set_value(std::move(*envelope.mutable_response()));
    }
    return;
  }
  if (callbacks_.on_message) callbacks_.on_message(shared_from_this(), std::move(envelope));
}

void Connection::Write() {
  if (queue_.empty()) {
    writing_ = false;
    if (shutting_down_) CloseSocket();
    return;
  }
  writing_ = true;
  const SplitFrame& frame = queue_.front();
  std::array<asio::const_buffer, 2> buffers = {asio::buffer(frame.head), asio::buffer(frame.data)};
  asio::async_write(*stream_, buffers,
                    [self = shared_from_this()](boost::system::error_code ec, size_t) {
                      if (ec) {
                        self->Shutdown(UnavailableError("write failed: " + ec.message()));
                        self->CloseSocket();
                        return;
                      }
                      self->last_write_ = Clock::now();
                      self->queue_.pop_front();
                      self->Write();
                    });
}

void Connection::Tick() {
  keepalive_.expires_after(std::chrono::seconds(5));
  keepalive_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->shutting_down_) return;
    auto now = Clock::now();
    if (now - self->last_read_ > kDeadPeer) {
      self->Shutdown(UnavailableError("peer went silent"));
      return;
    }
    if (now - self->last_write_ > kKeepalive) {
      wire::Envelope ping;
      ping.mutable_ping();
      self->Send(ping);
    }
    self->Tick();
  });
}

void Connection::Shutdown(const Status& reason) {
  if (shutting_down_) return;
  shutting_down_ = true;
  std::map<uint64_t, std::promise<Result<wire::Response>>> calls;
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    closed_ = true;
    calls.swap(calls_);
  }
  for (auto& [id, promise] : calls) {
    promise.set_value(UnavailableError("connection to " + peer_.ShortName() +
                                       " closed: " + std::string(reason.message())));
  }
  // Tell the peer why after what is queued, then close; a peer that does
  // not read gets two seconds.
  wire::Envelope goodbye;
  goodbye.mutable_close()->set_reason(std::string(reason.message()));
  auto frame = EncodeFrame(goodbye);
  if (frame.ok()) queue_.push_back(SplitFrame{std::move(*frame), {}});
  if (!writing_) Write();
  keepalive_.cancel();
  keepalive_.expires_after(std::chrono::seconds(2));
  keepalive_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->CloseSocket();
  });
  if (callbacks_.on_closed) callbacks_.on_closed(shared_from_this(), reason);
}

void Connection::CloseSocket() {
  if (socket_closed_) return;
  socket_closed_ = true;
  keepalive_.cancel();
  boost::system::error_code ignored;
  stream_->lowest_layer().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream_->lowest_layer().close(ignored);
}

}  // namespace meshsync::node
