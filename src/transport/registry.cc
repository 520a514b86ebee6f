#include "transport/registry.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/log.h"

namespace weft::transport {

Status Registry::Add(RegistryEntry entry) {
  if (entry.name.empty() || !entry.create)
    return Error(Code::kInvalidArgument, "a transport entry needs a name and a factory");
  if (Find(entry.name))
    return Error(Code::kAlreadyExists, "a transport named '{}' is registered already", entry.name);
  entries_.push_back(std::move(entry));
  return OkStatus();
}

const RegistryEntry* Registry::Find(std::string_view name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

std::string CapabilityWords(uint32_t caps) {
  static constexpr std::pair<uint32_t, const char*> kWords[] = {
      {kCapHostMemory, "host memory"},     {kCapDeviceMemory, "device memory"},
      {kCapSameProcess, "same process"},   {kCapSameNode, "same node"},
      {kCapRemoteNode, "other nodes"},     {kCapRegions, "registered regions"},
      {kCapNotify, "notifications"},       {kCapPageBatches, "page batches"},
      {kCapStreamOrdering, "stream-ordered"}};
  std::string out;
  for (const auto& [bit, word] : kWords)
    if (caps & bit) out += (out.empty() ? "" : ", ") + std::string(word);
  return out;
}

std::string Registry::Markdown() const {
  std::string out =
      "## Transports\n\n"
      "`transport=` (the pool) and the transfer engine's `transports` option pick from these paths by name, or "
      "`auto`: every path marked so below, the engine's cost model choosing per copy. A name this build lacks is "
      "NOT_SUPPORTED, naming the ones it has. Each path reads the config keys in its row.\n\n"
      "| transport | in `auto` | serves | config keys | what it does |\n|---|---|---|---|---|\n";
  for (const auto& e : entries_) {
    std::string keys;
    for (const auto& k : e.config_keys) keys += (keys.empty() ? "" : ", ") + ("`" + k + "`");
    const std::string in_auto = !e.in_auto ? "no" : e.auto_here ? "where " + e.auto_where : "yes";
    out += fmt::format("| `{}` | {} | {} | {} | {} |\n", e.name, in_auto,
                       CapabilityWords(e.capabilities), keys.empty() ? "-" : keys, e.summary);
  }
  return out;
}

std::string Registry::Names() const {
  std::string out;
  for (const auto& e : entries_) out += (out.empty() ? "" : ", ") + e.name;
  return out;
}

Result<std::vector<const RegistryEntry*>> Registry::Select(std::string_view preference) const {
  std::vector<const RegistryEntry*> out;
  if (preference.empty() || preference == "auto") {
    for (const auto& e : entries_)
      if (e.in_auto && (!e.auto_here || e.auto_here())) out.push_back(&e);
    return out;
  }
  size_t pos = 0;
  while (pos <= preference.size()) {
    size_t comma = std::min(preference.find(',', pos), preference.size());
    std::string_view name = preference.substr(pos, comma - pos);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (name.empty())
      return Error(Code::kInvalidArgument, "transport list '{}' has an empty name (use e.g. shm,tcp or auto)",
                   preference);
    const RegistryEntry* e = Find(name);
    if (!e)
      return Error(Code::kNotSupported, "transport '{}' is not in this weft build; it has: {} (or auto)", name,
                   Names());
    if (std::find(out.begin(), out.end(), e) != out.end())
      return Error(Code::kInvalidArgument, "transport list '{}' names '{}' twice", preference, name);
    out.push_back(e);
    pos = comma + 1;
  }
  return out;
}

Result<TransportSet> Registry::Create(std::string_view preference, const TransportContext& context) const {
  WEFT_ASSIGN_OR_RETURN(auto selected, Select(preference));
  TransportSet set;
  for (const auto& e : entries_)
    if (std::find(selected.begin(), selected.end(), &e) == selected.end())
      set.absent[e.name] = preference.empty() || preference == "auto"
                               ? "not in auto: name it in the transport list to use it"
                               : fmt::format("not selected (transports={})", preference);
  for (const RegistryEntry* e : selected) {
    auto t = e->create(context);
    if (t.ok()) {
      set.transports.push_back(std::move(*t));
    } else {
      set.absent[e->name] = t.status().message();
      WEFT_LOG_INFO("path {} off: {}", e->name, t.status().message());
    }
  }
  return set;
}

}  // namespace weft::transport
