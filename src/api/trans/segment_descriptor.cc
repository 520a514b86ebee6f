#include "api/trans/segment_descriptor.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "meta/base64.h"
#include "wire/control.h"

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

namespace {

json BlobsJson(const BlobMap& blobs) {
  json j = json::object();
  for (const auto& [name, bytes] : blobs) j[name] = meta::Base64Encode(bytes);
  return j;
}

}  // namespace

std::string EncodeDescriptor(const SegmentDescriptor& d) {
  json buffers = json::array();
  for (const auto& b : d.buffers) {
    buffers.push_back(
        {{"addr", b.addr}, {"length", b.length}, {"location", b.location}, {"blobs", BlobsJson(b.blobs)}});
  }
  json j = {{"version", kDescriptorVersion}, {"name", d.name}, {"transports", BlobsJson(d.endpoints)},
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

Result<BlobMap> Blobs(const json& j, const char* key, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return Bad(fmt::format("{} lacks an object '{}'", what, key));
  if (it->size() > kMaxTransportsPerMap)
    return Bad(fmt::format("{} has {} transports, the limit is {}", what, it->size(), kMaxTransportsPerMap));
  BlobMap out;
  for (auto b = it->begin(); b != it->end(); ++b) {
    if (!wire::ValidTransportName(b.key())) return Bad(fmt::format("{} names a transport '{}'", what, b.key()));
    if (!b->is_string()) return Bad(fmt::format("{}: the blob of '{}' is not a string", what, b.key()));
    auto bytes = meta::Base64Decode(b->get<std::string>());
    if (!bytes.ok()) return Bad(fmt::format("{}: the blob of '{}' is not base64", what, b.key()));
    if (bytes->empty() || bytes->size() > kMaxBlobBytes)
      return Bad(fmt::format("{}: the blob of '{}' has {} bytes (1..{})", what, b.key(), bytes->size(), kMaxBlobBytes));
    out[b.key()] = std::move(*bytes);
  }
  return out;
}

Result<DescriptorBuffer> Buffer(const json& b) {
  if (!b.is_object()) return Bad("a buffer is not an object");
  WEFT_RETURN_IF_ERROR(OnlyKeys(b, {"addr", "length", "location", "blobs"}, "a buffer"));
  DescriptorBuffer out;
  WEFT_ASSIGN_OR_RETURN(out.addr, U64(b, "addr", "a buffer"));
  WEFT_ASSIGN_OR_RETURN(out.length, U64(b, "length", "a buffer"));
  WEFT_ASSIGN_OR_RETURN(out.location, Str(b, "location", "a buffer"));
  WEFT_ASSIGN_OR_RETURN(out.blobs, Blobs(b, "blobs", "a buffer"));
  if (out.length == 0) return Bad("a buffer of length 0");
  if (out.addr > UINT64_MAX - out.length) return Bad("a buffer wraps around the address space");
  return out;
}

}  // namespace

Result<SegmentDescriptor> DecodeDescriptor(std::string_view text) {
  if (text.size() > kMaxDescriptorBytes)
    return Bad(fmt::format("{} bytes, the limit is {}", text.size(), kMaxDescriptorBytes));
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad("not a JSON object");
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_unsigned() || version->get<uint64_t>() != kDescriptorVersion)
    return Error(Code::kProtocol, "segment descriptor of another format version (this weft reads version {}): "
                 "the peer runs an incompatible weft", kDescriptorVersion);
  WEFT_RETURN_IF_ERROR(OnlyKeys(j, {"version", "name", "transports", "buffers"}, "the descriptor"));
  SegmentDescriptor d;
  WEFT_ASSIGN_OR_RETURN(d.name, Str(j, "name", "the descriptor"));
  WEFT_ASSIGN_OR_RETURN(d.endpoints, Blobs(j, "transports", "the descriptor"));
  auto bufs = j.find("buffers");
  if (bufs == j.end() || !bufs->is_array()) return Bad("no 'buffers' array");
  if (bufs->size() > kMaxDescriptorBuffers)
    return Bad(fmt::format("{} buffers, the limit is {}", bufs->size(), kMaxDescriptorBuffers));
  for (const json& b : *bufs) {
    WEFT_ASSIGN_OR_RETURN(DescriptorBuffer out, Buffer(b));
    if (!d.buffers.empty()) {
      const auto& prev = d.buffers.back();
      if (out.addr < prev.addr + prev.length) return Bad("buffers are unsorted or overlap");
    }
    d.buffers.push_back(std::move(out));
  }
  return d;
}

}  // namespace weft::trans
