// Typed configuration: what Pool::Join takes (public). Each key is read, lowest precedence
// first, from: its default, a JSON config file, the environment variable WEFT_<KEY> (upper case), and explicit overrides passed
// by the caller (command-line flags, API arguments). docs/config.md documents every key; a unit
// test keeps it complete.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <weft/status.h>

namespace weft {

struct Config {
  std::string pool_name = "weft";
  uint64_t rank_size = 256ull << 20;
  std::string coordinator;  // unix socket path, tcp://host:port, or etcd://h1:2379;h2:2379 (HA masters: join the
                            // elected one); empty means /tmp/weft-<pool_name>.sock
  std::string coordinator_listen;  // host:port a tcp:// coordinator binds; empty: the URL's own
  std::string peer_name;           // stable name for rejoining; empty: a fresh name per join
  int32_t numa_node = -1;
  uint64_t device_size = 0;     // GPU memory contributed to the pool's device region; 0: none
  int32_t device = 0;           // the GPU of the device slice, and the one this peer copies with
  uint32_t gpu_copy_sms = 0;    // SM budget of the GPU copy kernels (0: all)
  uint32_t max_ranks = 64;
  uint64_t gva_base = 0x200000000000ull;
  bool unified_va = false;
  uint32_t copy_threads = 4;
  uint64_t split_bytes = 8ull << 20;
  uint32_t heartbeat_ms = 200;
  uint32_t reply_spin_us = 100;  // control calls poll this long for their reply before sleeping
  uint32_t peer_timeout_ms = 2000;
  // The coordinator's bounds on connections that have not joined yet (docs/ops.md).
  uint32_t coordinator_join_timeout_ms = 2000;
  uint32_t coordinator_max_pre_join = 64;
  uint32_t deadline_ms = 30000;
  bool log_paths = false;
  std::string log_level = "warn";
  std::string metrics_address;           // host:port serving GET /metrics (Prometheus); empty: off
  std::string transport = "auto";        // "auto"/"shm", or "tcp" (forces tcp between same-node peers)
  std::string data_address = "127.0.0.1:0";
  std::string cluster_secret;            // never logged
  uint32_t tcp_lanes = 4;
  // The store's master (hosted with the coordinator): docs/store.md.
  uint32_t store_lease_ttl_ms = 10000;
  uint32_t store_high_watermark_pct = 90;
  uint32_t store_eviction_pct = 5;
  uint32_t store_put_timeout_ms = 30000;
  uint32_t store_soft_pin_ttl_ms = 30 * 60 * 1000;
  std::string store_ssd_path;             // a store client's SSD tier; empty: none
  uint64_t store_ssd_capacity = 16ull << 30;

  std::string CoordinatorPath() const;
};

struct ConfigKey {
  std::string name;         // "rank_size"
  std::string env;          // "WEFT_RANK_SIZE"
  std::string type;         // "bytes", "int", "bool", "string"
  std::string default_value;
  std::string doc;
  std::string range;        // the values it takes ("1..256", "trace, debug, ..."); others are INVALID_ARGUMENT
};

// Every key, in documentation order.
const std::vector<ConfigKey>& ConfigKeys();

// Sets one key from text ("64MiB", "true", "3"). INVALID_ARGUMENT names the key, the value and,
// for a value out of range, the range; config is then left as it was.
Status SetConfigValue(Config& config, const std::string& key, const std::string& value);

// Every key's value within its range (ConfigKey::range). INVALID_ARGUMENT names the first key
// out of range and its range. LoadConfig and Pool::Join check it.
Status CheckConfig(const Config& config);

// Builds a Config: defaults < file (JSON object; skipped when path is empty) < environment <
// overrides. Unknown keys in the file or overrides are INVALID_ARGUMENT.
Result<Config> LoadConfig(const std::string& file_path = "",
                          const std::map<std::string, std::string>& overrides = {});

// Parses sizes such as "4096", "64KiB", "1MiB", "2GiB", "1G".
Result<uint64_t> ParseBytes(const std::string& text);
std::string FormatBytes(uint64_t bytes);

// Markdown table of ConfigKeys(), as in docs/config.md.
std::string ConfigMarkdown();

}  // namespace weft
