// `weft route DST SRC`: joins a running pool and prints the path a copy between the two
// addresses would take, and why. "local" stands for a local host buffer of this process.
#include <fmt/format.h>


#include <weft/pool.h>

#include "base/status.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {
namespace {

Result<uint64_t> ParseAddress(const std::string& text, uint64_t local) {
  if (text == "local") return local;
  try {
    size_t used = 0;
    uint64_t v = std::stoull(text, &used, 0);
    if (used == text.size()) return v;
  } catch (...) {
  }
  return Error(Code::kInvalidArgument, "'{}' is neither an address (0x...) nor 'local'", text);
}

}  // namespace

void AddRoute(CLI::App& app, Runner* run) {
  struct Options {
    std::string dst, src;
    std::string len = "4096";
    ConfigFlags flags;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("route", "Print the path a copy between two addresses would take, and why");
  cmd->add_option("dst", o->dst, "Destination: a GVA (0x...) or 'local'")->required();
  cmd->add_option("src", o->src, "Source: a GVA (0x...) or 'local'")->required();
  cmd->add_option("--len", o->len, "Bytes to copy");
  o->flags.Register(*cmd);
  cmd->callback([=] {
    *run = [=]() -> int {
      auto config = o->flags.Load();
      if (!config) return 2;
      auto len = ParseBytes(o->len);
      if (!len.ok()) {
        fmt::print(stderr, "weft route: --len: {}\n", len.status().message());
        return 2;
      }
      // "local" only has to be an address of this process's host memory: a route is chosen from
      // what the ends are, and nothing is copied, so no buffer of --len bytes is needed.
      static uint8_t local_byte = 0;
      const uint64_t local = reinterpret_cast<uint64_t>(&local_byte);
      auto dst = ParseAddress(o->dst, local);
      auto src = ParseAddress(o->src, local);
      if (!dst.ok() || !src.ok()) {
        fmt::print(stderr, "weft route: {}\n", (!dst.ok() ? dst : src).status().message());
        return 2;
      }
      auto pool = bm::Pool::Join(*config, bm::JoinMode::kJoin);
      if (!pool.ok()) {
        fmt::print(stderr, "weft route: {}\n", pool.status().ToString());
        return 1;
      }
      fmt::print("seen from a new peer (rank {}) of pool '{}':\n", (*pool)->rank(), config->pool_name);
      auto route = (*pool)->Route(*dst, *src, *len);
      if (!route.ok()) {
        fmt::print("no route: {}\n", route.status().ToString());
        return 1;
      }
      fmt::print("{}\n", route->ToString());
      return 0;
    };
  });
}

}  // namespace weft::tools
