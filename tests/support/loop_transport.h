// "loop": a transport written the way a new one is, for tests only. It reaches regions of
// engines in this very process by memcpy. Its endpoint blob is the pid (a peer elsewhere is not
// reachable), its region blob the region's local address; it is registered through a
// transport::Registry entry and nothing else of weft is edited for it.
#pragma once

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <memory>
#include <string>

#include "engine/builtin_transports.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace weft::testing {

class LoopTransport final : public transport::Transport {
 public:
  std::string_view name() const override { return "loop"; }
  uint32_t capabilities() const override {
    return transport::kCapHostMemory | transport::kCapSameProcess | transport::kCapRegions;
  }
  bool Serves(const transport::RouteKey&) const override { return false; }  // regions only
  double CostNanos(const transport::RouteKey&, uint64_t) const override { return 1e12; }
  Status Copy(const transport::Endpoint&, const transport::Endpoint&, uint64_t) override {
    return Error(Code::kNotSupported, "loop copies regions only");
  }
  std::string_view Explain(const transport::RouteKey&) const override { return "loop"; }
  Result<std::string> EndpointBlob() const override { return std::to_string(::getpid()); }
  Result<std::string> ExportRegion(const transport::LocalRegion& r) override {
    if (r.device) return Error(Code::kNotSupported, "loop reaches host memory only");
    return std::to_string(reinterpret_cast<uintptr_t>(r.base));
  }
  Result<std::unique_ptr<transport::PeerLink>> Connect(std::string_view blob) override {
    if (blob != std::to_string(::getpid())) return Error(Code::kUnavailable, "loop: another process");
    return std::make_unique<transport::PeerLink>();
  }
  Result<std::unique_ptr<transport::ImportedRegion>> ImportRegion(const transport::PeerLink&, uint64_t base,
                                                                  uint64_t len, std::string_view blob) override {
    auto r = std::make_unique<Region>();
    auto [end, ec] = std::from_chars(blob.data(), blob.data() + blob.size(), r->local);
    if (ec != std::errc() || end != blob.data() + blob.size() || r->local == 0)
      return Error(Code::kProtocol, "loop: bad region blob");
    r->base = base;
    r->len = len;
    return std::unique_ptr<transport::ImportedRegion>(std::move(r));
  }
  void Post(std::span<const transport::RemoteOp> ops, std::span<Status> results, Deadline) override {
    for (size_t i = 0; i < ops.size(); ++i) {
      auto* remote = reinterpret_cast<uint8_t*>(static_cast<const Region*>(ops[i].region)->local + ops[i].offset);
      const bool read = ops[i].kind == transport::RemoteOpKind::kRead;
      std::memcpy(read ? ops[i].local : remote, read ? remote : ops[i].local, ops[i].len);
      results[i] = OkStatus();
      ++posted;
    }
  }
  double RemoteCostNanos(uint64_t) const override { return 1; }
  std::string_view ExplainRemote() const override { return "the test's loop transport"; }
  static inline std::atomic<int> posted{0};

 private:
  struct Region final : transport::ImportedRegion {
    uintptr_t local = 0;
  };
};

// The built-in transports plus "loop".
inline transport::Registry RegistryWithLoop() {
  transport::Registry registry = engine::BuiltinTransports();
  (void)registry.Add({"loop", transport::kCapHostMemory | transport::kCapRegions, "test transport", {},
                      [](const transport::TransportContext&) -> Result<std::unique_ptr<transport::Transport>> {
                        return std::unique_ptr<transport::Transport>(std::make_unique<LoopTransport>());
                      }});
  return registry;
}

}  // namespace weft::testing
