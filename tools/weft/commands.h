// The subcommands of the `weft` CLI. Each registers its options on the app and returns the
// exit status through the function it sets.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace weft::tools {

using Runner = std::function<int()>;

// Each adds a subcommand and sets *run when it is chosen.
void AddDemo(CLI::App& app, Runner* run);
void AddMeta(CLI::App& app, Runner* run);
void AddRoute(CLI::App& app, Runner* run);
void AddConfig(CLI::App& app, Runner* run);
void AddBench(CLI::App& app, Runner* run);

}  // namespace weft::tools
