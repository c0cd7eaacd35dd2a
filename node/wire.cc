#include "node/wire.h"

#include <zstd.h>

#include <memory>
#include <string_view>

namespace meshsync::node {

Result<std::string> EncodeMessageFrame(const google::protobuf::MessageLite& message,
                                       bool compress) {
  std::string body;
  if (!message.SerializeToString(&body)) return InternalError("cannot serialize a message");
  uint8_t flags = 0;
  std::string_view payload = body;
  // Uninitialised: a large message's compression buffer is megabytes, and
  // zeroing it cost as much as compressing into it.
  std::unique_ptr<char[]> packed;
  if (compress && body.size() > kCompressAbove) {
    const size_t bound = ZSTD_compressBound(body.size());
    packed = std::make_unique_for_overwrite<char[]>(bound);
    size_t size = ZSTD_compress(packed.get(), bound, body.data(), body.size(), 3);
    if (!ZSTD_isError(size) && size < body.size()) {
      payload = std::string_view(packed.get(), size);
      flags |= kFlagCompressed;
    }
  }
  if (payload.size() > kMaxFrameBody) {
    return InvalidArgumentError("message of " + std::to_string(payload.size()) +
                                " bytes is over the frame limit");
  }
  std::string frame;
  frame.reserve(kFrameHeaderSize + payload.size());
  uint32_t size = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) frame.push_back(static_cast<char>(size >> (24 - 8 * i)));
  frame.push_back(static_cast<char>(flags));
  frame.append(payload);
  return frame;
}

Result<std::string> EncodeFrame(const wire::Envelope& envelope) {
  bool bulk = envelope.has_response() && envelope.response().has_data_read();
  return EncodeMessageFrame(envelope, !bulk);
}

void StatusToWire(const Status& status, wire::Error& out) {
  out.set_code(static_cast<int>(status.code()));
  out.set_message(std::string(status.message()));
}

Status StatusFromWire(const wire::Error& error) {
  if (error.code() == 0) return Status::Ok();
  int code = error.code();
  if (code < 0 || code > static_cast<int>(StatusCode::kInternal)) {
    code = static_cast<int>(StatusCode::kInternal);
  }
  return Status(static_cast<StatusCode>(code), error.message());
}

Result<size_t> DecodeFrameHeader(std::string_view header, uint8_t& flags) {
  if (header.size() != kFrameHeaderSize) return InvalidArgumentError("truncated frame header");
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i) size = (size << 8) | static_cast<uint8_t>(header[i]);
  flags = static_cast<uint8_t>(header[4]);
  if ((flags & ~kFlagCompressed) != 0) {
    return InvalidArgumentError("frame has unknown flags " + std::to_string(flags));
  }
  if (size > kMaxFrameBody) {
    return InvalidArgumentError("frame of " + std::to_string(size) + " bytes is over the " +
                                std::to_string(kMaxFrameBody) + "-byte limit");
  }
  return static_cast<size_t>(size);
}

Status DecodeMessageBody(std::string_view body, uint8_t flags, google::protobuf::MessageLite& out) {
  std::string plain;
  if ((flags & kFlagCompressed) != 0) {
    unsigned long long size = ZSTD_getFrameContentSize(body.data(), body.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
      return InvalidArgumentError("compressed frame is malformed");
    }
    if (size > kMaxFrameBody) {
      return InvalidArgumentError("compressed frame expands past the frame limit");
    }
    plain.resize(static_cast<size_t>(size));
    size_t got = ZSTD_decompress(plain.data(), plain.size(), body.data(), body.size());
    if (ZSTD_isError(got) || got != plain.size()) {
      return InvalidArgumentError("compressed frame is malformed");
    }
    body = plain;
  }
  if (!out.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return InvalidArgumentError("frame does not hold a valid message");
  }
  return Status::Ok();
}

Status DecodeFrameBody(std::string_view body, uint8_t flags, wire::Envelope& out) {
  MESHSYNC_RETURN_IF_ERROR(DecodeMessageBody(body, flags, out));
  if (out.body_case() == wire::Envelope::BODY_NOT_SET) {
    return InvalidArgumentError("frame holds an empty or unknown message");
  }
  return Status::Ok();
}

}  // namespace meshsync::node
