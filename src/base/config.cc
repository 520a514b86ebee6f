#include <weft/config.h>

#include "base/status.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <type_traits>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

namespace weft {
namespace {

using Setter = std::function<Status(Config&, const std::string&)>;

// The range of a key: checks a value already set in a Config (so it serves both a value
// parsed from text and a Config built directly in C++) and describes it for docs/config.md.
using Checker = std::function<Status(const Config&)>;

struct Range {
  std::string text;  // "1..256", "trace, debug, ...": the docs' range column and the error
  Checker check;     // OK or the reason (without the key: the caller names it)
};

struct KeyDef {
  ConfigKey key;
  Setter set;
  Checker check;
};

template <typename Int>
Range IntRange(Int Config::*field, int64_t lo, uint64_t hi, std::string note = "") {
  std::string text = fmt::format("{}..{}{}", lo, hi, note);
  return Range{text, [field, lo, hi, text](const Config& c) -> Status {
                 const Int v = c.*field;
                 const bool low = std::is_signed_v<Int> ? static_cast<int64_t>(v) < lo
                                                        : static_cast<uint64_t>(v) < static_cast<uint64_t>(lo);
                 const bool high = !(std::is_signed_v<Int> && static_cast<int64_t>(v) < 0) && static_cast<uint64_t>(v) > hi;
                 if (low || high) return Error(Code::kInvalidArgument, "{} is out of range (valid: {})", v, text);
                 return OkStatus();
               }};
}

Range BytesRange(uint64_t Config::*field, uint64_t lo, uint64_t hi, std::string note = "") {
  std::string text = fmt::format("{}..{}{}", FormatBytes(lo), FormatBytes(hi), note);
  return Range{text, [field, lo, hi, text](const Config& c) -> Status {
                 const uint64_t v = c.*field;
                 if (v < lo || v > hi)
                   return Error(Code::kInvalidArgument, "{} ({} bytes) is out of range (valid: {})", FormatBytes(v), v,
                                text);
                 return OkStatus();
               }};
}

Range OneOf(std::string Config::*field, std::vector<std::string> values) {
  std::string text;
  for (const auto& v : values) text += (text.empty() ? "" : ", ") + v;
  return Range{text, [field, values, text](const Config& c) -> Status {
                 for (const auto& v : values)
                   if (c.*field == v) return OkStatus();
                 return Error(Code::kInvalidArgument, "'{}' is not one of the values (valid: {})", c.*field, text);
               }};
}

// A string of at most max_len bytes (at least min_len), without NUL bytes or any of `banned`.
Range TextRange(std::string Config::*field, size_t min_len, size_t max_len, std::string banned = "") {
  std::string text = min_len > 0 ? fmt::format("{}..{} characters", min_len, max_len)
                                 : fmt::format("at most {} characters", max_len);
  if (!banned.empty()) text += fmt::format(", no '{}'", banned);
  return Range{text, [field, min_len, max_len, banned, text](const Config& c) -> Status {
                 const std::string& v = c.*field;
                 if (v.size() < min_len || v.size() > max_len)
                   return Error(Code::kInvalidArgument, "a value of {} characters is out of range (valid: {})", v.size(),
                                text);
                 if (v.find('\0') != std::string::npos || v.find_first_of(banned) != std::string::npos)
                   return Error(Code::kInvalidArgument, "'{}' holds a character that is not allowed (valid: {})", v, text);
                 return OkStatus();
               }};
}

Range AnyBool() {
  return Range{"true, false", [](const Config&) { return OkStatus(); }};
}

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
        if (*r > static_cast<uint64_t>(std::numeric_limits<Int>::max()))  // no wrap-around into range
          return Error(Code::kInvalidArgument, "'{}' is too small", v);
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

KeyDef Def(std::string name, std::string type, std::string def, std::string doc, Setter set, Range range) {
  std::string env = EnvName(name);
  return KeyDef{ConfigKey{std::move(name), std::move(env), std::move(type), std::move(def), std::move(doc),
                          std::move(range.text)},
                std::move(set), std::move(range.check)};
}

const std::vector<KeyDef>& Defs() {
  static const std::vector<KeyDef> defs = {
      Def("pool_name", "string", "weft", "Name of the pool to create or join; peers with another name are refused.",
          StringSetter(&Config::pool_name),
          TextRange(&Config::pool_name, 1, 64, "/")),
      Def("rank_size", "bytes", "256MiB",
          "Host memory each peer contributes to the pool (its slice of the GVA space). All peers of a pool must agree.",
          BytesSetter(&Config::rank_size),
          BytesRange(&Config::rank_size, 1, 1ull << 40)),
      Def("coordinator", "string", "/tmp/weft-<pool_name>.sock",
          "Where the pool's coordinator is (hosted by the first peer or by `weft meta`): a unix socket path "
          "(one machine; segments are mapped, path shm) or `tcp://host:port` (peers on many machines; needs "
          "`cluster_secret`, and every peer then uses transport=tcp). A host of `tcp://host:0` takes any free port. "
          "`etcd://h1:2379;h2:2379`: HA masters (`weft store-master --ha`); a peer joins the elected one.",
          StringSetter(&Config::coordinator),
          TextRange(&Config::coordinator, 0, 4096)),
      Def("coordinator_listen", "string", "(empty: the host:port of `coordinator`)",
          "For a `tcp://` coordinator: the host:port its host binds, when that differs from the address peers "
          "dial (e.g. `0.0.0.0:7000`).",
          StringSetter(&Config::coordinator_listen),
          TextRange(&Config::coordinator_listen, 0, 4096)),
      Def("peer_name", "string", "(empty: <pool_name>:<pid>.<random>)",
          "This peer's name in the pool. A live peer's name is unique (a second one gets ALREADY_EXISTS); a peer "
          "that restarts under the same name after it was declared gone gets its old rank back if it is free. "
          "The default is new on every join, so without it a restart is a new peer (lowest free rank).",
          StringSetter(&Config::peer_name),
          TextRange(&Config::peer_name, 0, 255)),
      Def("numa_node", "int", "-1", "NUMA node to bind the contributed host memory to; -1 leaves placement to the kernel.",
          IntSetter(&Config::numa_node),
          IntRange(&Config::numa_node, -1, 1023)),
      Def("device_size", "bytes", "0",
          "GPU memory (HBM) this peer contributes to the pool's device region: its device slice, CUDA VMM memory "
          "that same-node peers map by fd. 0: none. At most rank_size rounded up to 2 MiB; needs a CUDA GPU.",
          BytesSetter(&Config::device_size),
          BytesRange(&Config::device_size, 0, 1ull << 40)),
      Def("device", "int", "0", "The GPU that holds this peer's device slice and that it maps peers' slices for.",
          IntSetter(&Config::device),
          IntRange(&Config::device, 0, 1023)),
      Def("gpu_copy_sms", "int", "0",
          "SMs the GPU copy kernels may use (0: all); held through a CUDA green context so that copies leave "
          "the rest of the GPU to the application.",
          IntSetter(&Config::gpu_copy_sms),
          IntRange(&Config::gpu_copy_sms, 0, 65535)),
      Def("max_ranks", "int", "64", "Most peers one pool can hold; sets the size of the GVA window.",
          IntSetter(&Config::max_ranks),
          IntRange(&Config::max_ranks, 1, 65536)),
      Def("gva_base", "int", "35184372088832 (0x200000000000)",
          "First GVA of the pool; also the address at which unified-VA mode maps the pool.",
          IntSetter(&Config::gva_base),
          IntRange(&Config::gva_base, 4096, (1ull << 47) - 1, " (below 2^47)")),
      Def("unified_va", "bool", "false",
          "Map the pool at its GVAs so GVA pointers can be dereferenced; falls back to translation when the window is taken.",
          BoolSetter(&Config::unified_va),
          AnyBool()),
      Def("copy_threads", "int", "4", "Worker threads that split large copies.", IntSetter(&Config::copy_threads),
          IntRange(&Config::copy_threads, 0, 256, " (0: 1)")),
      Def("split_bytes", "bytes", "8MiB", "Copies at least this large are split across the copy threads.",
          BytesSetter(&Config::split_bytes),
          BytesRange(&Config::split_bytes, 1, 1ull << 40)),
      Def("heartbeat_ms", "int", "200", "Interval between a peer's heartbeats to the coordinator.",
          IntSetter(&Config::heartbeat_ms),
          IntRange(&Config::heartbeat_ms, 1, 3600000)),
      Def("reply_spin_us", "int", "100",
          "How long a call to the coordinator or the store master polls for its reply before it sleeps until "
          "woken. Polling saves a scheduler wake-up on each quick reply (most of a round trip on small VMs) and "
          "costs a core for at most this long per call; 0 sleeps at once (hosts with more busy threads than cores).",
          IntSetter(&Config::reply_spin_us),
          IntRange(&Config::reply_spin_us, 0, 100000)),
      Def("peer_timeout_ms", "int", "2000",
          "A peer silent for this long is declared down (copies to it then fail PEER_DOWN). Over tcp it is also "
          "the TCP_USER_TIMEOUT/keepalive bound of the coordinator connection, so half-open links are noticed. "
          "The other way round, a coordinator that answers no heartbeat for this long is unreachable to its "
          "peers: their control calls fail with UNAVAILABLE until it answers again (the coordinator's value "
          "counts).",
          IntSetter(&Config::peer_timeout_ms),
          IntRange(&Config::peer_timeout_ms, 1, 86400000)),
      Def("coordinator_join_timeout_ms", "int", "2000",
          "Read by the coordinator's host: a connection must join within this long of being accepted (over tcp, "
          "the cluster-secret handshake included), else it is closed (docs/ops.md).",
          IntSetter(&Config::coordinator_join_timeout_ms),
          IntRange(&Config::coordinator_join_timeout_ms, 1, 600000)),
      Def("coordinator_max_pre_join", "int", "64",
          "Read by the coordinator's host: connections that have not joined yet, at most, apart from joined peers. "
          "When full, a new connection closes the oldest of them (once it had 100 ms to join) instead of being "
          "refused, so a flood of idle connections cannot lock peers out (docs/ops.md).",
          IntSetter(&Config::coordinator_max_pre_join),
          IntRange(&Config::coordinator_max_pre_join, 1, 65536)),
      Def("deadline_ms", "int", "30000", "Default deadline of a copy, a join and a control call.",
          IntSetter(&Config::deadline_ms),
          IntRange(&Config::deadline_ms, 0, 86400000)),
      Def("log_paths", "bool", "false", "Log the path chosen for every copy (also WEFT_LOG_PATHS=1).",
          BoolSetter(&Config::log_paths),
          AnyBool()),
      Def("log_level", "string", "warn", "trace, debug, info, warn, error or off.", StringSetter(&Config::log_level),
          OneOf(&Config::log_level, {"trace", "debug", "info", "warn", "error", "off"})),
      Def("metrics_address", "string", "(empty: off)",
          "host:port where this process serves its metrics in Prometheus text at `GET /metrics` (`weft meta`, "
          "`weft store-master`, `weft trans-serve`, and a pool peer that sets it); port 0 takes any free port, "
          "which the process reports. Binds only the host given: use `0.0.0.0:9464` to be scraped from "
          "elsewhere. docs/ops.md lists the metrics.",
          StringSetter(&Config::metrics_address),
          TextRange(&Config::metrics_address, 0, 4096)),
      Def("transport", "string", "auto",
          "How the pool reaches other peers' slices. `auto` or `shm`: same-node peers map each other's memory "
          "(path shm); `tcp` (or another transport with remote regions, see Transports below): every other "
          "peer's slices are regions of it reached through that transport; with tcp, through its TCP data "
          "server, so one host can exercise the cross-node path. A name this build lacks is NOT_SUPPORTED, "
          "naming the transports it has.",
          StringSetter(&Config::transport),
          TextRange(&Config::transport, 1, 64)),
      Def("data_address", "string", "127.0.0.1:0",
          "host:port of this peer's TCP data server (port 0: any free port); the address other peers use.",
          StringSetter(&Config::data_address),
          TextRange(&Config::data_address, 0, 4096)),
      Def("cluster_secret", "string", "(empty)",
          "Shared secret that peers prove with HMAC-SHA256 before any TCP access; required with transport=tcp. "
          "A directory served by `weft meta --directory` with it takes writes only with its proof. Never logged.",
          StringSetter(&Config::cluster_secret),
          TextRange(&Config::cluster_secret, 0, 4096)),
      Def("tcp_lanes", "int", "4", "TCP connections per peer pair; large copies are sliced and striped over them.",
          IntSetter(&Config::tcp_lanes),
          IntRange(&Config::tcp_lanes, 1, 64)),
      Def("store_lease_ttl_ms", "int", "10000",
          "The store's read lease: an object read (get, exists) is neither removed nor evicted for this long, "
          "and a zero-copy read that takes longer fails with TIMEOUT. Read by the master's host.",
          IntSetter(&Config::store_lease_ttl_ms),
          IntRange(&Config::store_lease_ttl_ms, 1, 86400000)),
      Def("store_high_watermark_pct", "int", "90",
          "The store evicts when a put would fill the pool above this percentage of its capacity.",
          IntSetter(&Config::store_high_watermark_pct),
          IntRange(&Config::store_high_watermark_pct, 1, 100)),
      Def("store_eviction_pct", "int", "5",
          "How far below the high watermark an eviction brings the pool, in percent of its capacity.",
          IntSetter(&Config::store_eviction_pct),
          IntRange(&Config::store_eviction_pct, 0, 100)),
      Def("store_put_timeout_ms", "int", "30000",
          "A store put that is started but neither ended nor revoked within this time is revoked by the master "
          "(a writer that hung).",
          IntSetter(&Config::store_put_timeout_ms),
          IntRange(&Config::store_put_timeout_ms, 1, 86400000)),
      Def("store_soft_pin_ttl_ms", "int", "1800000",
          "How long a soft pin keeps an object behind every unpinned one in the eviction order.",
          IntSetter(&Config::store_soft_pin_ttl_ms),
          IntRange(&Config::store_soft_pin_ttl_ms, 1, 86400000)),
      Def("store_ssd_path", "string", "(empty: no SSD tier)",
          "A store client's SSD tier: a local directory where it keeps a copy of every value it writes, so that "
          "objects evicted from memory are still served to it (and promoted back). Files of an earlier run there "
          "are deleted when the client opens.",
          StringSetter(&Config::store_ssd_path),
          TextRange(&Config::store_ssd_path, 0, 4096)),
      Def("store_ssd_capacity", "bytes", "16GiB",
          "Most bytes the SSD tier's files may take; the oldest files go first to make room.",
          BytesSetter(&Config::store_ssd_capacity),
          BytesRange(&Config::store_ssd_capacity, 1, 1ull << 50)),
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
  Config next = config;  // a value out of range leaves config as it was
  Status s = def->set(next, value);
  if (s.ok()) s = def->check(next);
  if (!s.ok()) {
    // Every refusal names the range, also for text that does not parse ("many", "1e9999").
    const bool has_range = s.message().find("(valid: ") != std::string::npos;
    return Error(Code::kInvalidArgument, "config key '{}': {}{}", key, s.message(),
                 has_range ? std::string() : fmt::format(" (valid: {})", def->key.range));
  }
  config = std::move(next);
  return OkStatus();
}

Status CheckConfig(const Config& config) {
  for (const auto& d : Defs()) {
    Status s = d.check(config);
    if (!s.ok()) return Error(Code::kInvalidArgument, "config key '{}': {}", d.key.name, s.message());
  }
  return OkStatus();
}

Result<Config> LoadConfig(const std::string& file_path, const std::map<std::string, std::string>& overrides) {
  Config config;
  if (!file_path.empty()) {
    std::error_code ec;
    const auto kind = std::filesystem::status(file_path, ec).type();
    if (kind == std::filesystem::file_type::not_found)
      return Error(Code::kNotFound, "config file '{}' does not exist (give the path of a JSON file)", file_path);
    if (kind == std::filesystem::file_type::directory)
      return Error(Code::kInvalidArgument, "config file '{}' is a directory (give the path of a JSON file)", file_path);
    if (!ec && kind != std::filesystem::file_type::regular && kind != std::filesystem::file_type::symlink)
      return Error(Code::kInvalidArgument, "config file '{}' is not a regular file (give the path of a JSON file)",
                   file_path);
    std::ifstream in(file_path);
    if (!in) return Error(Code::kNotFound, "config file '{}' cannot be opened", file_path);
    nlohmann::json doc;
    try {  // a read error (EIO, EISDIR on a path that became a directory) throws std::ios_failure
      doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    } catch (const std::exception& e) {
      return Error(Code::kIo, "config file '{}' cannot be read: {}", file_path, e.what());
    }
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
  WEFT_RETURN_IF_ERROR(CheckConfig(config));
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
  std::string out = "| key | environment | type | default | range | meaning |\n|---|---|---|---|---|---|\n";
  for (const auto& k : ConfigKeys())
    out += fmt::format("| `{}` | `{}` | {} | `{}` | {} | {} |\n", k.name, k.env, k.type, k.default_value, k.range,
                       k.doc);
  return out;
}

}  // namespace weft
