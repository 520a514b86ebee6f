// `weft config`: prints the effective configuration, or the key reference as Markdown.
#include <fmt/format.h>

#include <weft/config.h>

#include "engine/builtin_transports.h"
#include "tools/weft/commands.h"

namespace weft::tools {

void AddConfig(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("config", "Print the effective configuration, or --markdown for docs/config.md");
  auto markdown = std::make_shared<bool>(false);
  auto file = std::make_shared<std::string>();
  cmd->add_flag("--markdown", *markdown, "Print the reference table of every key");
  cmd->add_option("--file", *file, "JSON config file to layer over the defaults");
  cmd->callback([=] {
    *run = [=] {
      if (*markdown) {
        fmt::print("{}\n{}", ConfigMarkdown(), engine::BuiltinTransports().Markdown());
        return 0;
      }
      auto config = LoadConfig(*file);
      if (!config.ok()) {
        fmt::print(stderr, "weft config: {}\n", config.status().ToString());
        return 1;
      }
      fmt::print("pool_name={}\nrank_size={}\ncoordinator={}\nnuma_node={}\nmax_ranks={}\ngva_base={:#x}\n"
                 "unified_va={}\ncopy_threads={}\nsplit_bytes={}\nheartbeat_ms={}\npeer_timeout_ms={}\n"
                 "coordinator_join_timeout_ms={}\ncoordinator_max_pre_join={}\ndeadline_ms={}\nlog_paths={}\nlog_level={}\ntransport={}\ndata_address={}\n"
                 "cluster_secret={}\ntcp_lanes={}\n",
                 config->pool_name, FormatBytes(config->rank_size), config->CoordinatorPath(), config->numa_node,
                 config->max_ranks, config->gva_base, config->unified_va, config->copy_threads,
                 FormatBytes(config->split_bytes), config->heartbeat_ms, config->peer_timeout_ms,
                 config->coordinator_join_timeout_ms, config->coordinator_max_pre_join, config->deadline_ms,
                 config->log_paths, config->log_level, config->transport, config->data_address,
                 config->cluster_secret.empty() ? "(not set)" : "(set, not shown)", config->tcp_lanes);
      return 0;
    };
  });
}

}  // namespace weft::tools
