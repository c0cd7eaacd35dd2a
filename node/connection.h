// Connection: one authenticated TLS 1.3 link to a peer, carrying framed
// Envelopes both ways.
//
// All socket work happens on the node's I/O thread (one io_context run by
// one thread), so the stream needs no locking. Other threads Send() and
// Call(): both post to the I/O thread. Call() matches a Response to its
// Request by id and blocks its (non-I/O) caller until it arrives, the
// connection closes, or the timeout passes; many calls can be in flight.
//
// Reading is strict: a frame over the size limit, one that does not parse,
// or a Response nobody asked for closes the connection with a logged
// reason. The peer's identity is checked by the caller after the
// handshake (Node), before Start().
#ifndef MESHSYNC_NODE_CONNECTION_H_
#define MESHSYNC_NODE_CONNECTION_H_

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "meshsync/status.h"
#include "node/asio.h"
#include "node/identity.h"
#include "node/wire.h"

namespace meshsync::node {

// The TCP socket under TLS, read through a buffer. Asio's TLS stream reads
// its socket a record (at most 17 KiB) at a time; a receive is a system call
// whose fixed cost, on a virtual machine, was most of a large transfer's
// receiving: one receive now takes whatever has arrived, up to kBytes.
class BufferedSocket : public boost::asio::buffered_read_stream<boost::asio::ip::tcp::socket> {
 public:
  static constexpr size_t kBytes = 256 << 10;
  explicit BufferedSocket(boost::asio::io_context& io) : buffered_read_stream(io, kBytes) {}
};
// Not movable: owned through a shared_ptr from before the handshake on.
using TlsStream = boost::asio::ssl::stream<BufferedSocket>;

// Makes the TLS context of a node: TLS 1.3 only, our certificate, and a
// peer certificate required (verified against device ids, not a CA).
Result<std::shared_ptr<boost::asio::ssl::context>> MakeTlsContext(const Identity& identity,
                                                                  bool server);

// The device id of the certificate the peer presented, after a handshake.
Result<DeviceId> PeerDeviceId(TlsStream& stream);

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  struct Callbacks {
    // On the I/O thread: every message that is not a Response.
    std::function<void(const std::shared_ptr<Connection>&, wire::Envelope&&)> on_message;
    // On the I/O thread, once: the connection is closed (the reason).
    std::function<void(const std::shared_ptr<Connection>&, const Status&)> on_closed;
  };

  Connection(std::shared_ptr<TlsStream> stream, DeviceId peer, bool outgoing);
  ~Connection();

  // Starts reading and the keepalive. Call once, on the I/O thread.
  void Start(Callbacks callbacks);

  // Queues a message. Any thread; a no-op once closed. The second form
  // moves the data of a DataRead into the frame instead of copying it.
  void Send(const wire::Envelope& envelope);
  void Send(wire::Envelope&& envelope);

  // Sends `request` (its id is assigned) and waits for the response. Not on
  // the I/O thread. kUnavailable when the connection closes first or the
  // peer does not answer within `timeout`; the peer's own error otherwise.
  Result<wire::Response> Call(wire::Request request,
                              std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // The same, without waiting: the future holds what Call would return.
  std::future<Result<wire::Response>> CallAsync(wire::Request request);

  // Closes with a reason, which is logged and, where possible, sent to the
  // peer first. Any thread.
  void Close(const Status& reason);

  const DeviceId& peer() const { return peer_; }
  bool outgoing() const { return outgoing_; }
  bool closed() const { return closed_; }
  std::string remote_address() const { return remote_; }

  // The peer's Hello, once received (set by the node).
  std::string peer_name;
  bool peer_hub = false;

 private:
  void ReadHeader();
  // Reads all of `buffer` (the peer is heard from: last_read_), then
  // `then()` on the I/O thread (the connection kept alive meanwhile); the
  // stream ending first is a truncated message, which closes the connection.
  template <typename Then>
  void ReadRest(boost::asio::mutable_buffer buffer, Then then);
  void ReadBody(size_t size, uint8_t flags);
  // A kFlagData frame: the message length, the message, then the data.
  void ReadDataPrefix(size_t size, uint8_t flags);
  void ReadDataMessage(size_t message, size_t data, uint8_t flags);
  void ReadData(uint8_t flags);
  void Deliver(Status decoded, wire::Envelope&& envelope);
  void Queue(Result<SplitFrame> frame);
  void Dispatch(wire::Envelope&& envelope);
  void Write();
  void Tick();
  void Shutdown(const Status& reason);  // I/O thread: fails calls, says goodbye
  void CloseSocket();                   // I/O thread

  std::shared_ptr<TlsStream> stream_;
  DeviceId peer_;
  bool outgoing_;
  std::string remote_;
  Callbacks callbacks_;
  boost::asio::steady_timer keepalive_;
  std::chrono::steady_clock::time_point last_read_;
  std::chrono::steady_clock::time_point last_write_;

  char header_[kFrameHeaderSize];
  char data_prefix_[kDataPrefixSize];
  std::string body_;
  std::string data_;              // a kFlagData frame's data
  std::deque<SplitFrame> queue_;  // frames to write; the front is in flight
  bool writing_ = false;
  std::atomic<bool> closed_{false};
  bool shutting_down_ = false;
  bool socket_closed_ = false;

  std::mutex calls_mu_;
  uint64_t next_call_ = 1;
  std::map<uint64_t, std::promise<Result<wire::Response>>> calls_;
};

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_CONNECTION_H_
