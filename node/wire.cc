#include "node/wire.h"

#include <zstd.h>

#include <cstring>
#include <memory>

namespace meshsync::node {

namespace {

void PutHeader(char* at, size_t size, uint8_t flags) {
  for (int i = 0; i < 4; ++i) at[i] = static_cast<char>(size >> (24 - 8 * i));
  at[4] = static_cast<char>(flags);
}

}  // namespace

// A large message (a scan with file data) is megabytes: it is serialized
// and compressed straight into the frame, so that it is held at most twice.
Result<std::string> EncodeMessageFrame(const google::protobuf::MessageLite& message,
                                       bool compress) {
  const size_t size = message.ByteSizeLong();
  auto too_large = [](size_t bytes) {
    return InvalidArgumentError("message of " + std::to_string(bytes) +
                                " bytes is over the frame limit");
  };
  std::string frame;
  if (!compress || size <= kCompressAbove) {
    if (size > kMaxFrameBody) return too_large(size);
    frame.resize(kFrameHeaderSize + size);
    PutHeader(frame.data(), size, 0);
    message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(frame.data()) +
                                            kFrameHeaderSize);
    return frame;
  }
  // Uninitialised: zeroing megabytes cost as much as compressing them.
  std::unique_ptr<char[]> body = std::make_unique_for_overwrite<char[]>(size);
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(body.get()));
  frame.resize(kFrameHeaderSize + ZSTD_compressBound(size));
  size_t packed = ZSTD_compress(frame.data() + kFrameHeaderSize, frame.size() - kFrameHeaderSize,
                                body.get(), size, 3);
  if (!ZSTD_isError(packed) && packed < size) {
    if (packed > kMaxFrameBody) return too_large(packed);
    frame.resize(kFrameHeaderSize + packed);
    PutHeader(frame.data(), packed, kFlagCompressed);
    return frame;
  }
  if (size > kMaxFrameBody) return too_large(size);
  frame.resize(kFrameHeaderSize + size);
  PutHeader(frame.data(), size, 0);
  std::memcpy(frame.data() + kFrameHeaderSize, body.get(), size);
  return frame;
}

Result<std::string> EncodeFrame(const wire::Envelope& envelope) {
  bool bulk = envelope.has_response() && envelope.response().has_data_read();
  return EncodeMessageFrame(envelope, !bulk);
}

Result<SplitFrame> EncodeSplitFrame(wire::Envelope&& envelope) {
  SplitFrame frame;
  bool outside = envelope.has_response() && envelope.response().has_data_read() &&
                 envelope.response().data_read().data().size() >= kDataOutsideAbove;
  if (!outside) {
    MESHSYNC_ASSIGN_OR_RETURN(frame.head, EncodeFrame(envelope));
    return frame;
  }
  frame.data = std::move(*envelope.mutable_response()->mutable_data_read()->mutable_data());
  const size_t size = envelope.ByteSizeLong();
  const size_t body = kDataPrefixSize + size + frame.data.size();
  if (body > kMaxFrameBody) {
    return InvalidArgumentError("message of " + std::to_string(body) +
                                " bytes is over the frame limit");
  }
  frame.head.resize(kFrameHeaderSize + kDataPrefixSize + size);
  PutHeader(frame.head.data(), body, kFlagData);
  for (int i = 0; i < 4; ++i) {
    frame.head[kFrameHeaderSize + i] = static_cast<char>(size >> (24 - 8 * i));
  }
  envelope.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(frame.head.data()) +
                                           kFrameHeaderSize + kDataPrefixSize);
  return frame;
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
  if ((flags & ~(kFlagCompressed | kFlagData)) != 0) {
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

Result<size_t> DecodeDataPrefix(std::string_view prefix, size_t body_size) {
  if (prefix.size() != kDataPrefixSize || body_size < kDataPrefixSize) {
    return InvalidArgumentError("truncated data frame");
  }
  size_t size = 0;
  for (int i = 0; i < 4; ++i) size = (size << 8) | static_cast<uint8_t>(prefix[i]);
  if (size > body_size - kDataPrefixSize) {
    return InvalidArgumentError("data frame's message runs past its end");
  }
  return size;
}

Status DecodeDataMessage(std::string_view message, uint8_t flags, std::string data,
                         wire::Envelope& out) {
  if ((flags & kFlagData) != 0) return InvalidArgumentError("data frame flags are inconsistent");
  MESHSYNC_RETURN_IF_ERROR(DecodeFrameBody(message, flags, out));
  if (!out.has_response() || !out.response().has_data_read() ||
      !out.response().data_read().data().empty()) {
    return InvalidArgumentError("frame carries data for a message that takes none");
  }
  *out.mutable_response()->mutable_data_read()->mutable_data() = std::move(data);
  return Status::Ok();
}

Status DecodeFrameBody(std::string_view body, uint8_t flags, wire::Envelope& out) {
  if ((flags & kFlagData) != 0) {
    MESHSYNC_ASSIGN_OR_RETURN(size_t size,
                              DecodeDataPrefix(body.substr(0, kDataPrefixSize), body.size()));
    std::string_view rest = body.substr(kDataPrefixSize);
    return DecodeDataMessage(rest.substr(0, size), flags & ~kFlagData,
                             std::string(rest.substr(size)), out);
  }
  MESHSYNC_RETURN_IF_ERROR(DecodeMessageBody(body, flags, out));
  if (out.body_case() == wire::Envelope::BODY_NOT_SET) {
    return InvalidArgumentError("frame holds an empty or unknown message");
  }
  return Status::Ok();
}

}  // namespace meshsync::node
