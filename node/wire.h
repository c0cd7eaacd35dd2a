// Framing of the peer protocol: one Envelope per frame,
// [u32 body length, big-endian][u8 flags][body], the body a protobuf
// Envelope, zstd-compressed when flag 1 is set. With flag 2 the body is
// [u32 message length][Envelope][data]: a Response whose DataRead leaves its
// data out of the protobuf, so that a block of file data is neither copied
// into the frame by the sender nor out of it by the receiver. Pure
// functions, so the decoder can be fuzzed without a socket.
#ifndef MESHSYNC_NODE_WIRE_H_
#define MESHSYNC_NODE_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "meshsync/status.h"
#include "node/wire.pb.h"

namespace meshsync::node {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderSize = 5;
// The largest body on the wire, and the largest a compressed body may
// expand to: a frame claiming more is refused before anything is read.
inline constexpr size_t kMaxFrameBody = 16u << 20;
inline constexpr uint8_t kFlagCompressed = 1;
inline constexpr uint8_t kFlagData = 2;
inline constexpr size_t kDataPrefixSize = 4;  // the message length of a kFlagData body
// DataRead data at least this large travels outside the message (kFlagData).
inline constexpr size_t kDataOutsideAbove = 4096;
// Bodies smaller than this are sent as they are.
inline constexpr size_t kCompressAbove = 512;

// Serializes any message as one frame, compressed if asked and worth it.
Result<std::string> EncodeMessageFrame(const google::protobuf::MessageLite& message, bool compress);
// Parses a frame body (after its header) into any message.
Status DecodeMessageBody(std::string_view body, uint8_t flags, google::protobuf::MessageLite& out);

// Serializes `envelope` as one frame. Metadata is compressed; bulk data
// (DataRead), already compressed or not worth it, is not.
Result<std::string> EncodeFrame(const wire::Envelope& envelope);

// A frame in two parts, for a gather write: `head` (frame header, message
// length, message) and then `data`.
struct SplitFrame {
  std::string head;
  std::string data;
};
// Serializes `envelope` as one frame, moving the data of a Response's
// DataRead of kDataOutsideAbove bytes or more out of it and into `data`
// (kFlagData); any other envelope is encoded as EncodeFrame does, all in
// `head`.
Result<SplitFrame> EncodeSplitFrame(wire::Envelope&& envelope);

// Checks a frame header; returns the body length.
Result<size_t> DecodeFrameHeader(std::string_view header, uint8_t& flags);
// For a kFlagData body of `body_size` bytes: checks the message length that
// starts it and returns it.
Result<size_t> DecodeDataPrefix(std::string_view prefix, size_t body_size);
// Decodes the message of a kFlagData frame (its flags without kFlagData)
// and moves `data` into its DataRead, which must be a Response's, empty.
Status DecodeDataMessage(std::string_view message, uint8_t flags, std::string data,
                         wire::Envelope& out);

// A Status as a wire Error, and back. An unknown code from a peer becomes
// kInternal; code 0 is OK.
void StatusToWire(const Status& status, wire::Error& out);
Status StatusFromWire(const wire::Error& error);

// Parses a frame body (after its header), any flags.
Status DecodeFrameBody(std::string_view body, uint8_t flags, wire::Envelope& out);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_WIRE_H_
