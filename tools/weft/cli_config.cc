#include "tools/weft/cli_config.h"

#include <fmt/format.h>

namespace weft::tools {

void ConfigFlags::Register(CLI::App& cmd) {
  cmd.add_option("--config", file, "JSON config file");
  cmd.add_option("--set", sets, "Override a config key: --set rank_size=1GiB (repeatable)");
}

std::optional<Config> ConfigFlags::Load() const {
  std::map<std::string, std::string> overrides = extra;
  for (const auto& kv : sets) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      fmt::print(stderr, "weft: --set wants key=value, got '{}'\n", kv);
      return std::nullopt;
    }
    overrides[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  auto config = LoadConfig(file, overrides);
  if (!config.ok()) {
    fmt::print(stderr, "weft: {}\n", config.status().ToString());
    return std::nullopt;
  }
  return *config;
}

}  // namespace weft::tools
