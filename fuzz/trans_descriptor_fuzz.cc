// Fuzzes the transfer engine's segment descriptor decoder (api/trans/segment_descriptor.h), which
// reads JSON fetched from the directory or from a p2p peer. Anything either fails with PROTOCOL
// or decodes to a descriptor that keeps its invariants and survives encode -> decode unchanged.
#include <string_view>

#include "api/trans/segment_descriptor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace weft;
  auto d = trans::DecodeDescriptor(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!d.ok()) {
    if (d.status().code() != Code::kProtocol) __builtin_trap();
    return 0;
  }
  auto blobs_ok = [](const trans::BlobMap& m) {
    if (m.size() > trans::kMaxTransportsPerMap) return false;
    for (const auto& [name, bytes] : m)
      if (name.empty() || name.size() > 32 || bytes.empty() || bytes.size() > trans::kMaxBlobBytes) return false;
    return true;
  };
  if (!blobs_ok(d->endpoints)) __builtin_trap();
  for (size_t i = 0; i < d->buffers.size(); ++i) {
    const auto& b = d->buffers[i];
    if (b.length == 0 || !blobs_ok(b.blobs)) __builtin_trap();
    if (i > 0 && d->buffers[i - 1].addr + d->buffers[i - 1].length > b.addr) __builtin_trap();
    if (d->Find(b.addr, b.length) != &b) __builtin_trap();
  }
  auto again = trans::DecodeDescriptor(trans::EncodeDescriptor(*d));
  if (!again.ok() || !(*again == *d)) __builtin_trap();
  return 0;
}
