// `weft status`: a live view of a pool, read from its coordinator without joining it (no rank,
// no slice): every rank's peer, its health and paths, the allocator's usage, and the
// coordinator's recent errors; as a table, as JSON (--json), once or every --watch seconds.
#include <unistd.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "meta/leader_election.h"
#include "meta/status_client.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {
namespace {

// "0 B", "512 B", "1.5 MiB": usage is rarely a round number, unlike configured sizes.
std::string HumanBytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

// "850ms", "12.3s", "5m03s", "2h05m", "3d04h".
std::string HumanAge(uint64_t ms) {
  if (ms < 1000) return fmt::format("{}ms", ms);
  if (ms < 60'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000);
  const uint64_t s = ms / 1000;
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{:02}h", s / 86400, s % 86400 / 3600);
}

// up, late (heard from longer ago than half the peer timeout: the next miss may take it down),
// down, left.
std::string Health(const wire::StatusPeer& p, uint32_t peer_timeout_ms) {
  if (p.state == wire::PeerState::kUp && peer_timeout_ms > 0 && p.last_heard_ms * 2 > peer_timeout_ms) return "late";
  return std::string(wire::PeerStateName(p.state));
}

// Where the peer runs: the address it connected from over tcp, else the coordinator's node.
std::string Node(const wire::StatusPeer& p, const wire::StatusReply& s) {
  return p.host.empty() ? s.coordinator_host : p.host;
}

std::string Paths(const wire::StatusPeer& p) {
  return p.transports.empty() ? std::string("-") : fmt::format("{}", fmt::join(p.transports, ","));
}

std::string Used(const wire::StatusUsage& u) {
  if (u.capacity == 0) return "-";
  return fmt::format("{} ({}%)", HumanBytes(u.used), u.used * 100 / u.capacity);
}

nlohmann::ordered_json UsageJson(const wire::StatusUsage& u) {
  return {{"capacity", u.capacity}, {"used", u.used}, {"allocations", u.allocations}};
}

nlohmann::ordered_json ToJson(const wire::StatusReply& s, const std::string& address) {
  nlohmann::ordered_json peers = nlohmann::ordered_json::array();
  for (const wire::StatusPeer& p : s.peers) {
    peers.push_back({{"rank", p.rank},
                     {"name", p.peer_name},
                     {"state", wire::PeerStateName(p.state)},
                     {"health", Health(p, s.peer_timeout_ms)},
                     {"heard_ms", p.last_heard_ms},
                     {"in_pool_ms", p.in_pool_ms},
                     {"pid", p.pid},
                     {"node", Node(p, s)},
                     {"host_slice", p.segment_size},
                     {"device_slice", p.device_size},
                     {"host_usage", UsageJson(p.host_usage)},
                     {"device_usage", UsageJson(p.device_usage)},
                     {"paths", p.transports},
                     {"reason", p.reason}});
  }
  nlohmann::ordered_json errors = nlohmann::ordered_json::array();
  for (const wire::StatusEvent& e : s.events) {
    errors.push_back({{"age_ms", e.age_ms}, {"unix_ms", e.unix_ms}, {"code", CodeName(e.code)}, {"message", e.text}});
  }
  return {{"pool", s.pool_name},
          {"coordinator", address},
          {"coordinator_host", s.coordinator_host},
          {"uptime_ms", s.uptime_ms},
          {"rank_size", s.rank_size},
          {"max_ranks", s.max_ranks},
          {"peer_timeout_ms", s.peer_timeout_ms},
          {"peers_up", s.peers_up},
          {"peers_down", s.peers_down},
          {"peers_left", s.peers_left},
          {"totals",
           {{"joins", s.joins_total},
            {"join_refusals", s.join_refusals_total},
            {"peers_down", s.peers_down_total},
            {"peers_left", s.peers_left_total},
            {"heartbeats", s.heartbeats_total},
            {"connections", s.connections}}},
          {"usage", {{"host", UsageJson(s.host_usage)}, {"device", UsageJson(s.device_usage)}}},
          {"peers", std::move(peers)},
          {"errors", std::move(errors)}};
}

// Rows of cells printed with every column as wide as its widest cell; the last column is not
// padded (a down peer's reason may be long).
std::string AlignedTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], width[i]) : row[i];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string UsageLine(const char* medium, const wire::StatusUsage& u) {
  if (u.capacity == 0) return fmt::format("{} none", medium);
  return fmt::format("{} {} of {} in {} allocation{}", medium, HumanBytes(u.used), HumanBytes(u.capacity),
                     u.allocations, u.allocations == 1 ? "" : "s");
}

std::string ToTable(const wire::StatusReply& s, const std::string& address) {
  std::string out = fmt::format("pool '{}' at {} (coordinator on {}, up {})\n", s.pool_name, address,
                                s.coordinator_host.empty() ? "?" : s.coordinator_host, HumanAge(s.uptime_ms));
  out += fmt::format("ranks: {} up, {} down, {} left of {} (rank_size {}, peer timeout {} ms)\n", s.peers_up,
                     s.peers_down, s.peers_left, s.max_ranks, HumanBytes(s.rank_size), s.peer_timeout_ms);
  out += fmt::format("usage: {}; {}\n", UsageLine("host", s.host_usage), UsageLine("device", s.device_usage));
  out += fmt::format("since start: {} joins, {} refused, {} down, {} left, {} heartbeats; {} connections open "
                     "(this one included)\n\n",
                     s.joins_total, s.join_refusals_total, s.peers_down_total, s.peers_left_total,
                     s.heartbeats_total, s.connections);
  std::vector<std::vector<std::string>> rows = {{"RANK", "NAME", "STATE", "HEARD", "IN POOL", "PID", "NODE", "HOST",
                                                 "HOST USED", "DEVICE", "DEVICE USED", "ALLOCS", "PATHS", "NOTE"}};
  for (const wire::StatusPeer& p : s.peers) {
    rows.push_back({std::to_string(p.rank), p.peer_name.empty() ? "-" : p.peer_name, Health(p, s.peer_timeout_ms),
                    HumanAge(p.last_heard_ms), HumanAge(p.in_pool_ms), std::to_string(p.pid), Node(p, s),
                    HumanBytes(p.segment_size), Used(p.host_usage),
                    p.device_size == 0 ? "-" : HumanBytes(p.device_size), Used(p.device_usage),
                    std::to_string(p.host_usage.allocations + p.device_usage.allocations), Paths(p), p.reason});
  }
  out += s.peers.empty() ? std::string("(no peer has joined)\n") : AlignedTable(rows);
  if (s.events.empty()) return out + "\nrecent errors: none\n";
  out += "\nrecent errors (oldest first):\n";
  std::vector<std::vector<std::string>> events;
  for (const wire::StatusEvent& e : s.events) {
    events.push_back({"  " + HumanAge(e.age_ms) + " ago", std::string(CodeName(e.code)), e.text});
  }
  return out + AlignedTable(events);
}

struct StatusOptions {
  bool json = false;
  double watch_s = 0;  // 0: once
  int count = 0;       // with watch: refreshes before stopping, 0 for no end
  double timeout_s = 3;
  ConfigFlags flags;
};

// One refresh: prints the view, or the error on one line of stderr. False on error.
bool ShowOnce(const StatusOptions& o, const meta::StatusQuery& query, bool redraw) {
  meta::StatusQuery q = query;
  q.deadline = Deadline::After(std::chrono::duration_cast<Millis>(std::chrono::duration<double>(o.timeout_s)));
  auto status = meta::QueryPoolStatus(q);
  if (!status.ok()) {
    fmt::print(stderr, "weft status: {}\n", status.status().ToString());
    return false;
  }
  if (o.json) {
    // One document per line while watching (a stream of them), indented when shown once.
    const int indent = o.watch_s > 0 ? -1 : 2;
    // Names and reasons are bytes from the wire: invalid UTF-8 is replaced, not thrown on.
    const auto replace = nlohmann::ordered_json::error_handler_t::replace;
    fmt::print("{}\n", ToJson(*status, query.address).dump(indent, ' ', false, replace));
    return true;
  }
  if (redraw) fmt::print("\033[H\033[2J");
  fmt::print("{}", ToTable(*status, query.address));
  return true;
}

int RunStatus(const StatusOptions& o) {
  auto config = o.flags.Load();
  if (!config) return 2;
  meta::StatusQuery query;
  query.address = config->CoordinatorPath();
  if (meta::IsElectedCoordinator(query.address)) {  // HA masters: ask the one that leads now
    auto leader = meta::ResolveCoordinator(
        query.address, config->pool_name,
        Deadline::After(std::chrono::duration_cast<Millis>(std::chrono::duration<double>(o.timeout_s))));
    if (!leader.ok()) {
      fmt::print(stderr, "{}\n", leader.status().ToString());
      return 1;
    }
    query.address = *leader;
  }
  query.auth.cluster_secret = config->cluster_secret;
  // Redraw in place only for a person watching a terminal; a pipe gets one view after another.
  const bool redraw = o.watch_s > 0 && !o.json && ::isatty(STDOUT_FILENO) == 1;
  bool ok = ShowOnce(o, query, redraw);
  for (int shown = 1; o.watch_s > 0 && (o.count == 0 || shown < o.count); ++shown) {
    std::this_thread::sleep_for(std::chrono::duration<double>(o.watch_s));
    if (!redraw && !o.json) fmt::print("\n");
    ok = ShowOnce(o, query, redraw);
  }
  return ok ? 0 : 1;
}

}  // namespace

void AddStatus(CLI::App& app, Runner* run) {
  auto o = std::make_shared<StatusOptions>();
  auto* cmd = app.add_subcommand(
      "status", "Show a running pool: its peers, their health, paths and usage, and recent errors (without joining)");
  cmd->add_flag("--json", o->json, "Print JSON (while watching: one document per line)");
  auto* watch = cmd->add_option("--watch", o->watch_s, "Refresh every SECONDS until interrupted")
                    ->check(CLI::Range(0.05, 86400.0));
  cmd->add_option("--count", o->count, "With --watch: stop after N refreshes")->check(CLI::Range(1, 1 << 30))->needs(watch);
  cmd->add_option("--timeout", o->timeout_s, "Seconds to wait for the coordinator per refresh (default 3)")
      ->check(CLI::Range(0.05, 600.0));
  o->flags.Register(*cmd);
  cmd->callback([=] { *run = [=] { return RunStatus(*o); }; });
}

}  // namespace weft::tools
