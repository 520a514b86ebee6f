// `weft meta` and `weft store-master`: run a pool's coordinator (with the pool allocator and the
// store's master) alone, and/or a directory server
// (--directory: weft's directory API for embedded://host:port clients, and Mooncake's HTTP
// metadata protocol at /metadata for http://host:port/metadata clients), until SIGINT or SIGTERM.
#include <csignal>

#include <fmt/format.h>

#include "api/bm/pool_coordinator.h"
#include "meta/directory_server.h"
#include "meta/metrics_server.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {

namespace {

// Serves the coordinator's metrics (its counters, the store's and the allocator's gauges), if
// there is one (not with --directory-only), and the directory server's (`directory`).
Result<std::unique_ptr<meta::MetricsServer>> StartMetrics(const std::string& address,
                                                         bm::PoolCoordinator* coordinator,
                                                         const MetricsRegistry* directory) {
  meta::MetricsServerOptions o;
  o.bind = address;
  return meta::MetricsServer::Start(o, [coordinator, directory] {
    std::string text = coordinator != nullptr ? coordinator->MetricsText() : std::string();
    return text + directory->PrometheusText();
  });
}

// Runs the coordinator of `config`'s pool (with its allocator and the store's master) and/or a
// directory server until SIGINT or SIGTERM. `name` prefixes what it prints.
int ServeUntilSignal(const std::string& name, const Config& config, const std::string& directory, bool directory_only) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before threads start, so they inherit it
  if (directory_only && directory.empty()) {
    fmt::print(stderr, "{}: --directory-only needs --directory host:port\n", name);
    return 2;
  }
  MetricsRegistry directory_metrics;  // the directory server's refusals and timeouts
  std::unique_ptr<meta::DirectoryServer> dir;
  if (!directory.empty()) {
    meta::DirectoryServerOptions so;
    so.bind = directory;
    so.http.metrics = &directory_metrics;
    so.cluster_secret = config.cluster_secret;
    auto started = meta::DirectoryServer::Start(so);
    if (!started.ok()) {
      fmt::print(stderr, "{}: {}\n", name, started.status().ToString());
      return 1;
    }
    dir = std::move(*started);
    fmt::print("{}: directory on {} (embedded://{}, Mooncake metadata http://{}/metadata)\n", name, dir->address(),
               dir->address(), dir->address());
    // What protects the records, said at start so that an open directory is a choice, not a surprise.
    if (config.cluster_secret.empty()) {
      fmt::print("{}: directory writes are not authenticated (no cluster secret): anyone who reaches it may write "
                 "keys under no lease; set WEFT_CLUSTER_SECRET to require it\n",
                 name);
    } else {
      fmt::print("{}: directory writes require the cluster secret; reads stay open\n", name);
    }
  }
  std::unique_ptr<bm::PoolCoordinator> coordinator;
  if (!directory_only) {
    auto started = bm::PoolCoordinator::Start(config);
    if (!started.ok()) {
      fmt::print(stderr, "{}: {}\n", name, started.status().ToString());
      return 1;
    }
    coordinator = std::move(*started);
    fmt::print("{}: pool '{}' ({} per rank) listening on {}\n", name, config.pool_name, FormatBytes(config.rank_size),
               coordinator->socket_path());
  }
  std::unique_ptr<meta::MetricsServer> metrics;
  if (!config.metrics_address.empty()) {
    auto started = StartMetrics(config.metrics_address, coordinator.get(), &directory_metrics);
    if (!started.ok()) {
      fmt::print(stderr, "{}: {}\n", name, started.status().ToString());
      return 1;
    }
    metrics = std::move(*started);
    fmt::print("{}: metrics on http://{}/metrics\n", name, metrics->address());
  }
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  fmt::print("{}: stopping on signal {}\n", name, sig);
  return 0;
}

}  // namespace

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
      return config ? ServeUntilSignal("weft meta", *config, *directory, *directory_only) : 2;
    };
  });
}

void AddStoreMaster(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand(
      "store-master",
      "Run the store's master alone: the coordinator of the pool whose peers are the store's clients (store_* keys "
      "tune it; docs/store.md)");
  auto flags = std::make_shared<ConfigFlags>();
  auto directory = std::make_shared<std::string>();
  flags->Register(*cmd);
  cmd->add_option("--directory", *directory,
                  "Also serve a directory on host:port (Mooncake's http://host:port/metadata for transfer engines)");
  cmd->callback([=] {
    *run = [=] {
      auto config = flags->Load();
      return config ? ServeUntilSignal("weft store-master", *config, *directory, false) : 2;
    };
  });
}

}  // namespace weft::tools
