// Decodes arbitrary bytes as a frame of the peer protocol (header, zstd,
// protobuf, data after the message), as a hostile peer would send it, and hands any request to a
// session server that serves no folder. Must never crash; what decodes must
// re-encode and decode again.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "node/remote.h"
#include "node/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace meshsync;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (bytes.size() < node::kFrameHeaderSize) return 0;
  uint8_t flags = 0;
  auto body = node::DecodeFrameHeader(bytes.substr(0, node::kFrameHeaderSize), flags);
  if (!body.ok()) return 0;
  wire::Envelope envelope;
  if (!node::DecodeFrameBody(bytes.substr(node::kFrameHeaderSize), flags, envelope).ok()) return 0;
  auto frame = node::EncodeFrame(envelope);
  if (frame.ok()) {
    wire::Envelope again;
    uint8_t again_flags = 0;
    if (!node::DecodeFrameHeader(std::string_view(*frame).substr(0, node::kFrameHeaderSize),
                                 again_flags)
             .ok() ||
        !node::DecodeFrameBody(std::string_view(*frame).substr(node::kFrameHeaderSize), again_flags,
                               again)
             .ok()) {
      std::abort();
    }
  }
  // The same, split for a gather write (a DataRead's data after the message).
  auto split = node::EncodeSplitFrame(wire::Envelope(envelope));
  if (split.ok()) {
    std::string whole = split->head + split->data;
    wire::Envelope again;
    uint8_t again_flags = 0;
    if (!node::DecodeFrameHeader(std::string_view(whole).substr(0, node::kFrameHeaderSize),
                                 again_flags)
             .ok() ||
        !node::DecodeFrameBody(std::string_view(whole).substr(node::kFrameHeaderSize), again_flags,
                               again)
             .ok() ||
        again.SerializeAsString() != envelope.SerializeAsString()) {
      std::abort();
    }
  }
  if (envelope.has_request()) {
    node::SessionServer server([](const std::string&) -> Result<node::ServedFolder> {
      return NotFoundError("no folders");
    });
    wire::Response response = server.Handle(envelope.request());
    if (response.id() != envelope.request().id()) std::abort();
  }
  return 0;
}
