// What a transfer engine publishes about itself in the directory (at <prefix>ram/<name>): where
// its data server listens and which buffers peers may address, each with the access-table
// segment id and key that a request for it must carry. JSON, so that operators can read it with
// etcdctl or curl; decoded strictly, because it comes from the network.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace weft::trans {

struct DescriptorBuffer {
  uint64_t addr = 0;
  uint64_t length = 0;
  std::string location;
  uint32_t segment_id = 0;
  uint64_t access_key = 0;
  bool operator==(const DescriptorBuffer&) const = default;
};

struct SegmentDescriptor {
  std::string name;
  std::string protocol = "tcp";
  std::string host;  // data server address as peers reach it
  uint16_t data_port = 0;
  std::vector<DescriptorBuffer> buffers;  // sorted by addr, not overlapping
  bool operator==(const SegmentDescriptor&) const = default;

  // The buffer holding [addr, addr+len), or null.
  const DescriptorBuffer* Find(uint64_t addr, uint64_t len) const;
};

inline constexpr size_t kMaxDescriptorBytes = 4u << 20;
inline constexpr size_t kMaxDescriptorBuffers = 65536;

std::string EncodeDescriptor(const SegmentDescriptor& d);
// PROTOCOL for anything but a well-formed descriptor: missing or mistyped fields, unknown
// fields, port 0, empty host, buffers unsorted, overlapping, wrapping or of length 0, more than
// kMaxDescriptorBuffers, a text over kMaxDescriptorBytes.
Result<SegmentDescriptor> DecodeDescriptor(std::string_view text);

}  // namespace weft::trans
