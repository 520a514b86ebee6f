// Config flags shared by the subcommands: --config FILE and --set key=value (repeatable),
// layered over defaults and WEFT_* variables (docs/config.md).
#pragma once

#include <CLI/CLI.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <weft/config.h>

namespace weft::tools {

struct ConfigFlags {
  std::string file;
  std::vector<std::string> sets;
  std::map<std::string, std::string> extra;  // filled by the subcommand from its own flags

  void Register(CLI::App& cmd);
  // Prints the error and returns nullopt on bad input.
  std::optional<Config> Load() const;
};

}  // namespace weft::tools
