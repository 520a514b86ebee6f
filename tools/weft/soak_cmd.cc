// `weft soak`: N peers (processes; with --netns, network namespaces) x T threads doing random
// copies, batches and async copies over every path, every byte checked, while a chaos loop
// kills and restarts peers, freezes them and takes their links down; prints operations, bytes,
// errors by code, faults, mismatches and hangs (docs/ops.md, "Soak and chaos"). Exits 0 only
// with no mismatch, no hang, every fault answered and no peer crashed. Its peers run the
// hidden `weft soak-peer`.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "base/random.h"
#include "tools/weft/commands.h"
#include "tools/weft/interrupts.h"
#include "tools/weft/soak_report.h"
#include "tools/weft/soak_run.h"

#if WEFT_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif

namespace weft::tools {
namespace {

using soak::PhaseResult;
using soak::SoakSettings;

struct SoakOptions {
  double minutes = 0;
  double seconds = 0;
  uint32_t peers = 4;
  uint32_t threads = 2;
  std::string transports = "auto";
  bool netns = false;
  double chaos_interval_s = 5;
  uint64_t seed = 0;
  std::string json;
  std::string max_op = "1MiB";
  uint32_t deadline_ms = 5000;
  uint32_t hang_margin_ms = 10000;
  double recovery_s = 30;
  double progress_s = 10;
  std::string defect;  // hidden: mismatch, hang
  uint32_t slot = 0;   // soak-peer
};

bool UcxHere() {
#if WEFT_HAVE_UCX
  transport::ucx::UcxOptions options;
  options.tls = "tcp";
  return transport::ucx::UcxTransport::Create(options).ok();
#else
  return false;
#endif
}

// "auto": every path this machine has (shm, tcp, and ucx where libucp loads); else the list.
std::optional<std::vector<std::string>> Transports(const std::string& flag) {
  std::vector<std::string> out;
  if (flag == "auto") {
    out = {"shm", "tcp"};
    if (UcxHere()) out.push_back("ucx");
    return out;
  }
  std::stringstream in(flag);
  for (std::string t; std::getline(in, t, ',');) {
    if (t != "shm" && t != "tcp" && t != "ucx") {
      fmt::print(stderr, "weft soak: --transports: '{}' is none of shm, tcp, ucx\n", t);
      return std::nullopt;
    }
    out.push_back(t);
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<SoakSettings> Settings(const SoakOptions& o, size_t phases) {
  SoakSettings s;
  const double total = o.seconds > 0 ? o.seconds : (o.minutes > 0 ? o.minutes * 60 : 60);
  s.seconds = total / static_cast<double>(phases);
  s.peers = o.peers;
  s.threads = o.threads;
  s.netns = o.netns;
  s.chaos_interval_ms = static_cast<uint32_t>(o.chaos_interval_s * 1000);
  s.seed = o.seed ? o.seed : FreshSeed();
  auto max_op = ParseBytes(o.max_op);
  if (!max_op.ok() || *max_op < 4096 || *max_op > (64ull << 20)) {
    fmt::print(stderr, "weft soak: --max-op must be a size from 4KiB to 64MiB\n");
    return std::nullopt;
  }
  s.max_op = *max_op;
  s.deadline_ms = o.deadline_ms;
  s.hang_margin_ms = o.hang_margin_ms;
  s.recovery_ms = static_cast<uint32_t>(o.recovery_s * 1000);
  s.progress_s = o.progress_s;
  s.log_dir = fmt::format("/tmp/weft-soak-{}", getpid());
  if (!o.defect.empty()) {
    if (o.defect != "mismatch" && o.defect != "hang") {
      fmt::print(stderr, "weft soak: --inject-defect is mismatch or hang\n");
      return std::nullopt;
    }
    s.defect = o.defect == "mismatch" ? 1 : 2;
  }
  return s;
}

int RunSoak(const SoakOptions& o) {
  auto transports = Transports(o.transports);
  if (!transports) return 2;
  auto s = Settings(o, transports->size());
  if (!s) return 2;
  if (o.netns && geteuid() != 0)
    fmt::print("weft soak: --netns needs root; the tcp/ucx peers run on loopback instead\n");
  mkdir(s->log_dir.c_str(), 0755);
  // UCX reports every refused connect to a killed peer on stderr; the report counts them instead.
  // Set before any thread starts (setenv is not thread-safe); the peers inherit it.
  setenv("UCX_LOG_LEVEL", "fatal", /*overwrite=*/0);
  fmt::print("weft soak: transports {}, {:.0f} s each, seed {}, chaos every ~{:.1f} s, peer logs in {}\n",
             fmt::join(*transports, ","), s->seconds, s->seed, o.chaos_interval_s, s->log_dir);
  soak::SoakLeftovers leftovers;
  Interrupts interrupts("weft soak", "killing the peers and removing what the soak made",
                        [&leftovers] { leftovers.Remove(); });
  std::vector<PhaseResult> phases;
  for (const std::string& t : *transports) {
    // A thread per phase: it may enter a network namespace, which stays with it.
    std::thread phase([&] {
      phases.push_back(soak::RunPhase(*s, t, leftovers, [](const std::string& line) { fmt::print("{}\n", line); }));
    });
    phase.join();
  }
  const bool ok = soak::PrintReport(phases, *s);
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << soak::ReportJson(phases, *s).dump(2) << "\n";
    if (!out) {
      fmt::print(stderr, "weft soak: cannot write {}\n", o.json);
      return 1;
    }
  }
  // Kept for a failed run, unless the failure was the one asked for.
  if (ok || s->defect != 0) (void)!system(fmt::format("rm -rf '{}'", s->log_dir).c_str());
  for (const PhaseResult& p : phases) {
    if (!p.driver_stuck) continue;
    // A thread of ours is stuck in the pool it left behind: no orderly exit past it.
    fmt::print("weft soak: a worker of this process never returned; exiting without waiting for it\n");
    std::fflush(stdout);
    _exit(1);
  }
  return ok ? 0 : 1;
}

}  // namespace

void AddSoak(CLI::App& app, Runner* run) {
  auto o = std::make_shared<SoakOptions>();
  auto* cmd = app.add_subcommand("soak", "Random verified copies on N peers while chaos kills, freezes and cuts them");
  cmd->add_option("--minutes", o->minutes, "How long to run, over all transports (default 1)");
  cmd->add_option("--seconds", o->seconds, "How long to run, in seconds (overrides --minutes)");
  cmd->add_option("--peers", o->peers, "Peers (processes), this one included; it hosts the coordinator")
      ->check(CLI::Range(2u, soak::kMaxSlots));
  cmd->add_option("--threads", o->threads, "Worker threads per peer")->check(CLI::Range(1u, soak::kMaxThreads));
  cmd->add_option("--transports", o->transports,
                  "Comma-separated: shm, tcp, ucx; one pool each, one after another (auto: every path here)");
  cmd->add_flag("--netns", o->netns, "tcp/ucx peers in network namespaces of their own (root), links cut by chaos");
  cmd->add_option("--chaos-interval", o->chaos_interval_s, "Mean seconds between faults (0: no chaos)")
      ->check(CLI::Range(0.0, 3600.0));
  cmd->add_option("--seed", o->seed, "Seed of the choices (default: fresh, printed)");
  cmd->add_option("--json", o->json, "Write the report as JSON to this file");
  cmd->add_option("--max-op", o->max_op, "Largest copy (sizes are log-uniform from 1 byte)");
  cmd->add_option("--deadline-ms", o->deadline_ms, "Every op's deadline")->check(CLI::Range(100u, 600000u));
  cmd->add_option("--hang-margin-ms", o->hang_margin_ms, "An op busy past deadline + this is a hang");
  cmd->add_option("--recovery", o->recovery_s, "Seconds a fault has to be answered in");
  cmd->add_option("--progress", o->progress_s, "Seconds between progress lines (0: none)");
  // The tests' proof that the soak sees what it is for: one corrupted byte, one stuck op.
  cmd->add_option("--inject-defect", o->defect)->group("");

  auto* peer = app.add_subcommand("soak-peer", "")->group("");
  peer->add_option("--slot", o->slot)->required();
  peer->add_option("--seed", o->seed)->required();

  cmd->callback([=] { *run = [=] { return RunSoak(*o); }; });
  peer->callback([=] { *run = [=] { return soak::RunSoakPeer(o->slot, o->seed); }; });
}

}  // namespace weft::tools
