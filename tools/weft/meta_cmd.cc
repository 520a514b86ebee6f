// `weft meta`: runs a pool's coordinator (and pool allocator) alone, until SIGINT or SIGTERM.
#include <csignal>

#include <fmt/format.h>

#include "api/bm/pool_coordinator.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {

void AddMeta(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("meta", "Run the coordinator of a pool alone (peers join it)");
  auto flags = std::make_shared<ConfigFlags>();
  flags->Register(*cmd);
  cmd->callback([=] {
    *run = [=] {
      auto config = flags->Load();
      if (!config) return 2;
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before threads start, so they inherit it
      auto coordinator = bm::PoolCoordinator::Start(*config);
      if (!coordinator.ok()) {
        fmt::print(stderr, "weft meta: {}\n", coordinator.status().ToString());
        return 1;
      }
      fmt::print("weft meta: pool '{}' ({} per rank) listening on {}\n", config->pool_name,
                 FormatBytes(config->rank_size), (*coordinator)->socket_path());
      std::fflush(stdout);
      int sig = 0;
      sigwait(&set, &sig);
      fmt::print("weft meta: stopping on signal {}\n", sig);
      return 0;
    };
  });
}

}  // namespace weft::tools
