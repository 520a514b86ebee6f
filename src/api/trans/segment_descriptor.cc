#include "api/trans/segment_descriptor.h"

#include <algorithm>
#include <charconv>

#include <nlohmann/json.hpp>

namespace weft::trans {

using json = nlohmann::json;

const DescriptorBuffer* SegmentDescriptor::Find(uint64_t addr, uint64_t len) const {
  // The last buffer starting at or before addr.
  auto it = std::upper_bound(buffers.begin(), buffers.end(), addr,
                             [](uint64_t a, const DescriptorBuffer& b) { return a < b.addr; });
  if (it == buffers.begin()) return nullptr;
  --it;
  uint64_t off = addr - it->addr;
  if (off >= it->length || len > it->length - off) return nullptr;
  return &*it;
}

std::string EncodeDescriptor(const SegmentDescriptor& d) {
  json buffers = json::array();
  for (const auto& b : d.buffers) {
    buffers.push_back({{"addr", b.addr},
                       {"length", b.length},
                       {"location", b.location},
                       {"segment", b.segment_id},
                       {"key", fmt::format("{:016x}", b.access_key)}});
  }
  json j = {{"name", d.name}, {"protocol", d.protocol}, {"host", d.host}, {"data_port", d.data_port},
            {"buffers", std::move(buffers)}};
  return j.dump();
}

namespace {

Status Bad(std::string_view why) { return Error(Code::kProtocol, "malformed segment descriptor: {}", why); }

Status OnlyKeys(const json& j, std::initializer_list<std::string_view> keys, std::string_view what) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(keys.begin(), keys.end(), it.key()) == keys.end())
      return Bad(fmt::format("unknown field '{}' in {}", it.key(), what));
  }
  return OkStatus();
}

Result<uint64_t> U64(const json& j, const char* key, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) return Bad(fmt::format("{} lacks an unsigned '{}'", what, key));
  return it->get<uint64_t>();
}

Result<std::string> Str(const json& j, const char* key, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return Bad(fmt::format("{} lacks a string '{}'", what, key));
  return it->get<std::string>();
}

}  // namespace

Result<SegmentDescriptor> DecodeDescriptor(std::string_view text) {
  if (text.size() > kMaxDescriptorBytes)
    return Bad(fmt::format("{} bytes, the limit is {}", text.size(), kMaxDescriptorBytes));
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad("not a JSON object");
  WEFT_RETURN_IF_ERROR(OnlyKeys(j, {"name", "protocol", "host", "data_port", "buffers"}, "the descriptor"));
  SegmentDescriptor d;
  WEFT_ASSIGN_OR_RETURN(d.name, Str(j, "name", "the descriptor"));
  WEFT_ASSIGN_OR_RETURN(d.protocol, Str(j, "protocol", "the descriptor"));
  WEFT_ASSIGN_OR_RETURN(d.host, Str(j, "host", "the descriptor"));
  WEFT_ASSIGN_OR_RETURN(uint64_t port, U64(j, "data_port", "the descriptor"));
  if (d.host.empty()) return Bad("empty host");
  if (port == 0 || port > 65535) return Bad(fmt::format("data_port {} is not 1..65535", port));
  d.data_port = static_cast<uint16_t>(port);
  auto bufs = j.find("buffers");
  if (bufs == j.end() || !bufs->is_array()) return Bad("no 'buffers' array");
  if (bufs->size() > kMaxDescriptorBuffers)
    return Bad(fmt::format("{} buffers, the limit is {}", bufs->size(), kMaxDescriptorBuffers));
  for (const json& b : *bufs) {
    if (!b.is_object()) return Bad("a buffer is not an object");
    WEFT_RETURN_IF_ERROR(OnlyKeys(b, {"addr", "length", "location", "segment", "key"}, "a buffer"));
    DescriptorBuffer out;
    WEFT_ASSIGN_OR_RETURN(out.addr, U64(b, "addr", "a buffer"));
    WEFT_ASSIGN_OR_RETURN(out.length, U64(b, "length", "a buffer"));
    WEFT_ASSIGN_OR_RETURN(out.location, Str(b, "location", "a buffer"));
    WEFT_ASSIGN_OR_RETURN(uint64_t seg, U64(b, "segment", "a buffer"));
    WEFT_ASSIGN_OR_RETURN(std::string key, Str(b, "key", "a buffer"));
    if (seg == 0 || seg > UINT32_MAX) return Bad(fmt::format("segment id {} is not 1..2^32-1", seg));
    out.segment_id = static_cast<uint32_t>(seg);
    auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), out.access_key, 16);
    if (key.size() != 16 || ec != std::errc() || end != key.data() + key.size())
      return Bad("a buffer's key is not 16 hex digits");
    if (out.length == 0) return Bad("a buffer of length 0");
    if (out.addr > UINT64_MAX - out.length) return Bad("a buffer wraps around the address space");
    if (!d.buffers.empty()) {
      const auto& prev = d.buffers.back();
      if (out.addr < prev.addr + prev.length) return Bad("buffers are unsorted or overlap");
    }
    d.buffers.push_back(std::move(out));
  }
  return d;
}

}  // namespace weft::trans
