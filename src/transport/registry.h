// The transport registry: each transport is one entry (name, capabilities, the config keys it
// reads, a factory). Front ends build their engine's transports from a registry and a
// preference ("auto", or names in order such as "shm,tcp"), so adding a transport is a folder
// plus one entry, with no edit to the wire format, the directory, the engine or the front ends.
//
// A registry is a value, not a process-wide table: BuiltinTransports() (engine/) returns the
// entries of this build, and a program or test may add its own before creating an engine.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "base/status.h"
#include "transport/transport.h"

namespace weft::transport {

namespace tcp {
struct TcpTransportOptions;
}
namespace ucx {
struct UcxOptions;
}

// What factories may use. A field a factory needs and does not find makes it NOT_SUPPORTED
// with a reason, never a crash.
struct TransportContext {
  // This node's identity (base/node_identity.h): same-node transports compare it with a peer's.
  std::string node_id;
  uint32_t cuda_kernel_sms = 0;
  // The tcp transport's settings (client lanes, auth, its data server for exported regions,
  // device staging); null: the tcp entry is skipped.
  const tcp::TcpTransportOptions* tcp = nullptr;
  // The ucx transport's overrides of UCX's environment (UCX_TLS, UCX_NET_DEVICES); null: none.
  const ucx::UcxOptions* ucx = nullptr;
  MetricsRegistry* metrics = nullptr;
};

struct RegistryEntry {
  std::string name;       // the path name, as in routes and `transport=`
  uint32_t capabilities = 0;
  std::string summary;    // one line for `weft config` and docs
  std::vector<std::string> config_keys;  // the config keys it reads (docs/config.md)
  // NOT_SUPPORTED with the reason when it cannot run here (no GPU, no context).
  std::function<Result<std::unique_ptr<Transport>>(const TransportContext&)> create;
  // Whether "auto" selects it; an entry with a caveat (cma: no revocation) is named explicitly.
  bool in_auto = true;
  // When set, "auto" selects the entry only where this cheap probe (no library loaded, nothing
  // started) says the machine has what makes it worth starting; auto_where says what, for docs.
  std::function<bool()> auto_here = nullptr;
  std::string auto_where = {};
  // Whether a pool may reach its peers' slices through it: a slice is unmapped when its peer
  // leaves, so the owner must be able to withdraw access (cma cannot).
  bool pool_slices = true;
};

// The transports a front end got, and why each other selected one is absent.
struct TransportSet {
  TransportSet() = default;
  TransportSet(TransportSet&&) = default;
  TransportSet& operator=(TransportSet&&) = default;
  TransportSet(const TransportSet&) = delete;
  TransportSet& operator=(const TransportSet&) = delete;
  std::vector<std::unique_ptr<Transport>> transports;  // in preference order
  std::map<std::string, std::string> absent;           // name -> reason
};

// "host memory, device memory, same node, ..." for a capability set (docs, `weft route`).
std::string CapabilityWords(uint32_t caps);

class Registry {
 public:
  // ALREADY_EXISTS for a name taken; INVALID_ARGUMENT for an empty name or no factory.
  Status Add(RegistryEntry entry);
  const RegistryEntry* Find(std::string_view name) const;
  const std::vector<RegistryEntry>& entries() const { return entries_; }
  std::string Names() const;  // "memcpy, shm, cma, tcp"
  // The "Transports" section of docs/config.md (`weft config --markdown`): one row an entry.
  std::string Markdown() const;

  // The entries a preference selects: "auto" (or empty) = those with in_auto, in registry order; otherwise a
  // comma-separated list of names in preference order. NOT_SUPPORTED names the transports this
  // build has when a name is unknown; INVALID_ARGUMENT for a repeated or empty name.
  Result<std::vector<const RegistryEntry*>> Select(std::string_view preference) const;
  // Creates the selected entries; one whose factory fails is absent with its reason (logged).
  Result<TransportSet> Create(std::string_view preference, const TransportContext& context) const;

 private:
  std::vector<RegistryEntry> entries_;
};

}  // namespace weft::transport
