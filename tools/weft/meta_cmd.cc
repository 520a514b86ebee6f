// `weft meta`: runs a pool's coordinator (and pool allocator) alone, and/or a directory server
// (--directory: weft's directory API for embedded://host:port clients, and Mooncake's HTTP
// metadata protocol at /metadata for http://host:port/metadata clients), until SIGINT or SIGTERM.
#include <csignal>

#include <fmt/format.h>

#include "api/bm/pool_coordinator.h"
#include "meta/directory_server.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {

void AddMeta(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("meta", "Run the coordinator of a pool alone (peers join it), and/or a directory");
  auto flags = std::make_shared<ConfigFlags>();
  auto directory = std::make_shared<std::string>();
  auto directory_only = std::make_shared<bool>(false);
  flags->Register(*cmd);
  cmd->add_option("--directory", *directory,
                  "Also serve a directory on host:port (embedded://host:port; Mooncake's http://host:port/metadata)");
  cmd->add_flag("--directory-only", *directory_only, "Serve only the directory, no pool coordinator");
  cmd->callback([=] {
    *run = [=] {
      auto config = flags->Load();
      if (!config) return 2;
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before threads start, so they inherit it
      if (*directory_only && directory->empty()) {
        fmt::print(stderr, "weft meta: --directory-only needs --directory host:port\n");
        return 2;
      }
      std::unique_ptr<meta::DirectoryServer> dir;
      if (!directory->empty()) {
        meta::DirectoryServerOptions so;
        so.bind = *directory;
        auto started = meta::DirectoryServer::Start(so);
        if (!started.ok()) {
          fmt::print(stderr, "weft meta: {}\n", started.status().ToString());
          return 1;
        }
        dir = std::move(*started);
        fmt::print("weft meta: directory on {} (embedded://{}, Mooncake metadata http://{}/metadata)\n",
                   dir->address(), dir->address(), dir->address());
      }
      std::unique_ptr<bm::PoolCoordinator> coordinator;
      if (!*directory_only) {
        auto started = bm::PoolCoordinator::Start(*config);
        if (!started.ok()) {
          fmt::print(stderr, "weft meta: {}\n", started.status().ToString());
          return 1;
        }
        coordinator = std::move(*started);
        fmt::print("weft meta: pool '{}' ({} per rank) listening on {}\n", config->pool_name,
                   FormatBytes(config->rank_size), coordinator->socket_path());
      }
      std::fflush(stdout);
      int sig = 0;
      sigwait(&set, &sig);
      fmt::print("weft meta: stopping on signal {}\n", sig);
      return 0;
    };
  });
}

}  // namespace weft::tools
