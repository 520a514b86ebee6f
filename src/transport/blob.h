// Helpers for the opaque per-transport blobs (transport.h): each begins with its format's
// version byte and is read with the bounds-checked wire::Reader, so a blob from the network
// that does not parse is PROTOCOL naming the transport, never a crash.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "base/result.h"
#include "wire/codec.h"
#include "wire/control.h"

namespace weft::transport {

inline constexpr size_t kMaxBlobBytes = wire::kMaxTransportBlobBytes;  // as the join and descriptors carry them

inline wire::Writer BlobWriter(uint8_t version) {
  wire::Writer w;
  w.U8(version);
  return w;
}

inline std::string BlobText(const wire::Writer& w) {
  return std::string(reinterpret_cast<const char*>(w.buffer().data()), w.size());
}

inline std::span<const uint8_t> BlobBytes(std::string_view blob) {
  return {reinterpret_cast<const uint8_t*>(blob.data()), blob.size()};
}

// A reader past the version byte; PROTOCOL for an empty blob or another version.
inline Result<wire::Reader> OpenBlob(std::string_view blob, uint8_t version, std::string_view transport,
                                     std::string_view what) {
  if (blob.empty() || blob.size() > kMaxBlobBytes)
    return Error(Code::kProtocol, "{} blob of path {} has {} bytes (1..{} expected)", what, transport, blob.size(),
                 kMaxBlobBytes);
  if (static_cast<uint8_t>(blob[0]) != version)
    return Error(Code::kProtocol, "{} blob of path {} has format version {}, this weft reads {}", what, transport,
                 static_cast<uint8_t>(blob[0]), version);
  wire::Reader r(BlobBytes(blob));
  uint8_t v = 0;
  (void)r.U8(v);
  return r;
}

// Annotates a reader's failure as a malformed blob of the transport.
inline Status BadBlob(const Status& s, std::string_view transport, std::string_view what) {
  return Error(Code::kProtocol, "{} blob of path {} is malformed: {}", what, transport, s.message());
}

}  // namespace weft::transport
