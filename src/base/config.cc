#include <weft/config.h>

#include "base/status.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

namespace weft {
namespace {

using Setter = std::function<Status(Config&, const std::string&)>;

struct KeyDef {
  ConfigKey key;
  Setter set;
};

Result<uint64_t> ParseUnsigned(const std::string& text) {
  if (text.empty()) return Error(Code::kInvalidArgument, "empty number");
  uint64_t value = 0;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c)))
      return Error(Code::kInvalidArgument, "'{}' is not a non-negative integer", text);
    if (value > (UINT64_MAX - 9) / 10) return Error(Code::kInvalidArgument, "'{}' is too large", text);
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value;
}

Result<bool> ParseBool(const std::string& text) {
  if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
  if (text == "0" || text == "false" || text == "no" || text == "off") return false;
  return Error(Code::kInvalidArgument, "'{}' is not a boolean (use true or false)", text);
}

template <typename Int>
Setter IntSetter(Int Config::*field) {
  return [field](Config& c, const std::string& v) -> Status {
    if constexpr (std::is_signed_v<Int>) {
      if (!v.empty() && v[0] == '-') {
        auto r = ParseUnsigned(v.substr(1));
        if (!r.ok()) return r.status();
        c.*field = -static_cast<Int>(*r);
        return OkStatus();
      }
    }
    auto r = ParseUnsigned(v);
    if (!r.ok()) return r.status();
    if (*r > static_cast<uint64_t>(std::numeric_limits<Int>::max()))
      return Error(Code::kInvalidArgument, "'{}' is too large", v);
    c.*field = static_cast<Int>(*r);
    return OkStatus();
  };
}

Setter BytesSetter(uint64_t Config::*field) {
  return [field](Config& c, const std::string& v) -> Status {
    auto r = ParseBytes(v);
    if (!r.ok()) return r.status();
    c.*field = *r;
    return OkStatus();
  };
}

Setter BoolSetter(bool Config::*field) {
  return [field](Config& c, const std::string& v) -> Status {
    auto r = ParseBool(v);
    if (!r.ok()) return r.status();
    c.*field = *r;
    return OkStatus();
  };
}

Setter StringSetter(std::string Config::*field) {
  return [field](Config& c, const std::string& v) -> Status {
    c.*field = v;
    return OkStatus();
  };
}

std::string EnvName(const std::string& key) {
  std::string env = "WEFT_";
  for (char ch : key) env += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return env;
}

KeyDef Def(std::string name, std::string type, std::string def, std::string doc, Setter set) {
  std::string env = EnvName(name);
  return KeyDef{ConfigKey{std::move(name), std::move(env), std::move(type), std::move(def), std::move(doc)},
                std::move(set)};
}

const std::vector<KeyDef>& Defs() {
  static const std::vector<KeyDef> defs = {
      Def("pool_name", "string", "weft", "Name of the pool to create or join; peers with another name are refused.",
          StringSetter(&Config::pool_name)),
      Def("rank_size", "bytes", "256MiB",
          "Host memory each peer contributes to the pool (its slice of the GVA space). All peers of a pool must agree.",
          BytesSetter(&Config::rank_size)),
      Def("coordinator", "string", "/tmp/weft-<pool_name>.sock",
          "Where the pool's coordinator is (hosted by the first peer or by `weft meta`): a unix socket path "
          "(one machine; segments are mapped, path shm) or `tcp://host:port` (peers on many machines; needs "
          "`cluster_secret`, and every peer then uses transport=tcp). A host of `tcp://host:0` takes any free port.",
          StringSetter(&Config::coordinator)),
      Def("coordinator_listen", "string", "(empty: the host:port of `coordinator`)",
          "For a `tcp://` coordinator: the host:port its host binds, when that differs from the address peers "
          "dial (e.g. `0.0.0.0:7000`).",
          StringSetter(&Config::coordinator_listen)),
      Def("peer_name", "string", "(empty: <pool_name>:<pid>.<random>)",
          "This peer's name in the pool. A live peer's name is unique (a second one gets ALREADY_EXISTS); a peer "
          "that restarts under the same name after it was declared gone gets its old rank back if it is free. "
          "The default is new on every join, so without it a restart is a new peer (lowest free rank).",
          StringSetter(&Config::peer_name)),
      Def("numa_node", "int", "-1", "NUMA node to bind the contributed host memory to; -1 leaves placement to the kernel.",
          IntSetter(&Config::numa_node)),
      Def("device_size", "bytes", "0",
          "GPU memory (HBM) this peer contributes to the pool's device region: its device slice, CUDA VMM memory "
          "that same-node peers map by fd. 0: none. At most rank_size rounded up to 2 MiB; needs a CUDA GPU.",
          BytesSetter(&Config::device_size)),
      Def("device", "int", "0", "The GPU that holds this peer's device slice and that it maps peers' slices for.",
          IntSetter(&Config::device)),
      Def("gpu_copy_sms", "int", "0",
          "SMs the GPU copy kernels may use (0: all); held through a CUDA green context so that copies leave "
          "the rest of the GPU to the application.",
          IntSetter(&Config::gpu_copy_sms)),
      Def("max_ranks", "int", "64", "Most peers one pool can hold; sets the size of the GVA window.",
          IntSetter(&Config::max_ranks)),
      Def("gva_base", "int", "35184372088832 (0x200000000000)",
          "First GVA of the pool; also the address at which unified-VA mode maps the pool.",
          IntSetter(&Config::gva_base)),
      Def("unified_va", "bool", "false",
          "Map the pool at its GVAs so GVA pointers can be dereferenced; falls back to translation when the window is taken.",
          BoolSetter(&Config::unified_va)),
      Def("copy_threads", "int", "4", "Worker threads that split large copies.", IntSetter(&Config::copy_threads)),
      Def("split_bytes", "bytes", "8MiB", "Copies at least this large are split across the copy threads.",
          BytesSetter(&Config::split_bytes)),
      Def("heartbeat_ms", "int", "200", "Interval between a peer's heartbeats to the coordinator.",
          IntSetter(&Config::heartbeat_ms)),
      Def("peer_timeout_ms", "int", "2000",
          "A peer silent for this long is declared down (copies to it then fail PEER_DOWN). Over tcp it is also "
          "the TCP_USER_TIMEOUT/keepalive bound of the coordinator connection, so half-open links are noticed.",
          IntSetter(&Config::peer_timeout_ms)),
      Def("deadline_ms", "int", "30000", "Default deadline of a copy, a join and a control call.",
          IntSetter(&Config::deadline_ms)),
      Def("log_paths", "bool", "false", "Log the path chosen for every copy (also WEFT_LOG_PATHS=1).",
          BoolSetter(&Config::log_paths)),
      Def("log_level", "string", "warn", "trace, debug, info, warn, error or off.", StringSetter(&Config::log_level)),
      Def("transport", "string", "auto",
          "How the pool reaches other peers' slices. `auto` or `shm`: same-node peers map each other's memory "
          "(path shm); `tcp` (or another transport with remote regions, see Transports below): every other "
          "peer's slices are regions of it reached through that transport; with tcp, through its TCP data "
          "server, so one host can exercise the cross-node path. A name this build lacks is NOT_SUPPORTED, "
          "naming the transports it has.",
          StringSetter(&Config::transport)),
      Def("data_address", "string", "127.0.0.1:0",
          "host:port of this peer's TCP data server (port 0: any free port); the address other peers use.",
          StringSetter(&Config::data_address)),
      Def("cluster_secret", "string", "(empty)",
          "Shared secret that peers prove with HMAC-SHA256 before any TCP access; required with transport=tcp. "
          "Never logged.",
          StringSetter(&Config::cluster_secret)),
      Def("tcp_lanes", "int", "4", "TCP connections per peer pair; large copies are sliced and striped over them.",
          IntSetter(&Config::tcp_lanes)),
  };
  return defs;
}

const KeyDef* FindDef(const std::string& key) {
  for (const auto& d : Defs())
    if (d.key.name == key) return &d;
  return nullptr;
}

}  // namespace

std::string Config::CoordinatorPath() const {
  return coordinator.empty() ? "/tmp/weft-" + pool_name + ".sock" : coordinator;
}

const std::vector<ConfigKey>& ConfigKeys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> out;
    for (const auto& d : Defs()) out.push_back(d.key);
    return out;
  }();
  return keys;
}

Status SetConfigValue(Config& config, const std::string& key, const std::string& value) {
  const KeyDef* def = FindDef(key);
  if (!def) return Error(Code::kInvalidArgument, "unknown config key '{}' (see docs/config.md)", key);
  Status s = def->set(config, value);
  if (!s.ok()) return Error(Code::kInvalidArgument, "config key '{}': {}", key, s.message());
  return OkStatus();
}

Result<Config> LoadConfig(const std::string& file_path, const std::map<std::string, std::string>& overrides) {
  Config config;
  if (!file_path.empty()) {
    std::ifstream in(file_path);
    if (!in) return Error(Code::kNotFound, "config file '{}' cannot be opened", file_path);
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_object())
      return Error(Code::kInvalidArgument, "config file '{}' is not a JSON object", file_path);
    for (auto& [key, value] : doc.items()) {
      std::string text = value.is_string() ? value.get<std::string>() : value.dump();
      WEFT_RETURN_IF_ERROR(SetConfigValue(config, key, text).Annotate(file_path));
    }
  }
  for (const auto& d : Defs()) {
    if (const char* env = std::getenv(d.key.env.c_str()))
      WEFT_RETURN_IF_ERROR(SetConfigValue(config, d.key.name, env).Annotate(d.key.env));
  }
  for (const auto& [key, value] : overrides) WEFT_RETURN_IF_ERROR(SetConfigValue(config, key, value));
  if (config.rank_size == 0) return Error(Code::kInvalidArgument, "rank_size must be positive");
  if (config.max_ranks == 0) return Error(Code::kInvalidArgument, "max_ranks must be positive");
  if (config.copy_threads == 0) config.copy_threads = 1;
  if (config.transport.empty()) return Error(Code::kInvalidArgument, "transport must not be empty (auto, shm or tcp)");
  if (config.tcp_lanes == 0) return Error(Code::kInvalidArgument, "tcp_lanes must be positive");
  return config;
}

Result<uint64_t> ParseBytes(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  auto number = ParseUnsigned(text.substr(0, i));
  if (!number.ok()) return Error(Code::kInvalidArgument, "'{}' is not a size (try 4096, 64KiB, 1GiB)", text);
  std::string unit = text.substr(i);
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KiB" || unit == "KB" || unit == "k") mult = 1ull << 10;
  else if (unit == "M" || unit == "MiB" || unit == "MB") mult = 1ull << 20;
  else if (unit == "G" || unit == "GiB" || unit == "GB") mult = 1ull << 30;
  else if (unit == "T" || unit == "TiB" || unit == "TB") mult = 1ull << 40;
  else return Error(Code::kInvalidArgument, "'{}' has an unknown unit '{}' (use KiB, MiB, GiB)", text, unit);
  if (*number > UINT64_MAX / mult) return Error(Code::kInvalidArgument, "'{}' is too large", text);
  return *number * mult;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (u < 4 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return fmt::format("{}{}", bytes, units[u]);
}

std::string ConfigMarkdown() {
  std::string out = "| key | environment | type | default | meaning |\n|---|---|---|---|---|\n";
  for (const auto& k : ConfigKeys())
    out += fmt::format("| `{}` | `{}` | {} | `{}` | {} |\n", k.name, k.env, k.type, k.default_value, k.doc);
  return out;
}

}  // namespace weft
