// What a transfer engine publishes about itself in the directory (at <prefix>ram/<name>): per
// transport, its endpoint blob (where it is reached), and the buffers peers may address, each
// with per-transport blobs (what reaches it: a key, a file reference). The blobs are opaque
// here: only the transport that wrote one reads it (transport/transport.h), so a new transport
// needs no change to this format. JSON with base64 blobs, so operators can read it with etcdctl
// or curl; decoded strictly, because it comes from the network.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "wire/control.h"

namespace weft::trans {

using BlobMap = std::map<std::string, std::string>;  // transport name -> bytes

struct DescriptorBuffer {
  uint64_t addr = 0;
  uint64_t length = 0;
  std::string location;
  BlobMap blobs;
  bool operator==(const DescriptorBuffer&) const = default;
};

struct SegmentDescriptor {
  std::string name;
  BlobMap endpoints;
  std::vector<DescriptorBuffer> buffers;  // sorted by addr, not overlapping
  bool operator==(const SegmentDescriptor&) const = default;

  // The buffer holding [addr, addr+len), or null.
  const DescriptorBuffer* Find(uint64_t addr, uint64_t len) const;
};

inline constexpr int kDescriptorVersion = 2;
inline constexpr size_t kMaxDescriptorBytes = 4u << 20;
inline constexpr size_t kMaxDescriptorBuffers = 65536;
// The same limits as the pool's join (wire/control.h), so one transport's blobs fit both.
inline constexpr size_t kMaxTransportsPerMap = wire::kMaxTransportBlobs;
inline constexpr size_t kMaxBlobBytes = wire::kMaxTransportBlobBytes;

std::string EncodeDescriptor(const SegmentDescriptor& d);
// PROTOCOL for anything but a well-formed descriptor: another version, missing or mistyped
// fields, unknown fields, a transport name that is not 1-32 of [a-z0-9_-], a blob that is not
// base64 or over kMaxBlobBytes, more than kMaxTransportsPerMap blobs, buffers unsorted,
// overlapping, wrapping or of length 0, more than kMaxDescriptorBuffers, a text over
// kMaxDescriptorBytes. Unknown transport names are kept (a newer peer's transports).
Result<SegmentDescriptor> DecodeDescriptor(std::string_view text);

}  // namespace weft::trans
