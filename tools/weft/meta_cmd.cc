// `weft meta` and `weft store-master`: run a pool's coordinator (with the pool allocator and the
// store's master) alone, and/or a directory server
// (--directory: weft's directory API for embedded://host:port clients, and Mooncake's HTTP
// metadata protocol at /metadata for http://host:port/metadata clients), until SIGINT or SIGTERM.
// With --ha etcd://...: one of several such masters, elected leader through etcd; the others
// stand by (ServeElected).
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "api/bm/pool_coordinator.h"
#include "base/clock.h"
#include "meta/directory_server.h"
#include "meta/http_call.h"
#include "meta/journal_writer.h"
#include "meta/leader_election.h"
#include "meta/metrics_server.h"
#include "net/control_stream.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {

namespace {

// What a coordinator process serves, each part optional: the directory server, the coordinator
// (with the allocator and the store's master) and the metrics endpoint. Not movable: the
// metrics server reads the registries in place.
struct Services {
  MetricsRegistry directory_metrics;  // the directory server's refusals and timeouts
  std::unique_ptr<meta::DirectoryServer> dir;
  MetricsRegistry ha_metrics;         // an elected master's journal (weft_ha_journal_*)
  std::unique_ptr<meta::JournalWriter> journal;  // an elected master's; outlives the coordinator
  std::unique_ptr<bm::PoolCoordinator> coordinator;
  std::unique_ptr<meta::MetricsServer> metrics;
};

// Serves the coordinator's metrics (its counters, the store's and the allocator's gauges), if
// there is one (not with --directory-only), the directory server's, and an elected master's
// journal's.
Result<std::unique_ptr<meta::MetricsServer>> StartMetrics(const std::string& address,
                                                         bm::PoolCoordinator* coordinator, const Services& s) {
  meta::MetricsServerOptions o;
  o.bind = address;
  return meta::MetricsServer::Start(o, [coordinator, &s] {
    std::string text = coordinator != nullptr ? coordinator->MetricsText() : std::string();
    return text + s.directory_metrics.PrometheusText() + s.ha_metrics.PrometheusText();
  });
}

Status StartDirectory(const std::string& name, const Config& config, const std::string& directory, Services& s) {
  meta::DirectoryServerOptions so;
  so.bind = directory;
  so.http.metrics = &s.directory_metrics;
  so.cluster_secret = config.cluster_secret;
  WEFT_ASSIGN_OR_RETURN(s.dir, meta::DirectoryServer::Start(so));
  fmt::print("{}: directory on {} (embedded://{}, Mooncake metadata http://{}/metadata)\n", name, s.dir->address(),
             s.dir->address(), s.dir->address());
  // What protects the records, said at start so that an open directory is a choice, not a surprise.
  if (config.cluster_secret.empty()) {
    fmt::print("{}: directory writes are not authenticated (no cluster secret): anyone who reaches it may write "
               "keys under no lease; set WEFT_CLUSTER_SECRET to require it\n",
               name);
  } else {
    fmt::print("{}: directory writes require the cluster secret; reads stay open\n", name);
  }
  return OkStatus();
}

// Starts what `config` and the flags ask for, printing each part's address.
// `s`: services made already (an elected master's, holding its journal), or null;
// `durable`: an elected master's state.
Result<std::unique_ptr<Services>> StartServices(const std::string& name, const Config& config,
                                                const std::string& directory, bool directory_only,
                                                std::unique_ptr<Services> s = nullptr,
                                                const bm::Durability* durable = nullptr) {
  if (!s) s = std::make_unique<Services>();
  if (!directory.empty()) WEFT_RETURN_IF_ERROR(StartDirectory(name, config, directory, *s));
  if (!directory_only) {
    WEFT_ASSIGN_OR_RETURN(s->coordinator, bm::PoolCoordinator::Start(config, nullptr, {}, durable));
    fmt::print("{}: pool '{}' ({} per rank) listening on {}\n", name, config.pool_name, FormatBytes(config.rank_size),
               s->coordinator->socket_path());
  }
  if (!config.metrics_address.empty()) {
    WEFT_ASSIGN_OR_RETURN(s->metrics, StartMetrics(config.metrics_address, s->coordinator.get(), *s));
    fmt::print("{}: metrics on http://{}/metrics\n", name, s->metrics->address());
  }
  return s;
}

// SIGINT and SIGTERM, blocked in every thread so that only sigwait takes them. Call before any
// thread starts, so that they all inherit the mask. with_wakeup adds SIGUSR1, which only wakes
// a SignalTaker to end it.
sigset_t BlockStopSignals(bool with_wakeup) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (with_wakeup) sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Runs the coordinator of `config`'s pool (with its allocator and the store's master) and/or a
// directory server until SIGINT or SIGTERM. `name` prefixes what it prints.
int ServeUntilSignal(const std::string& name, const Config& config, const std::string& directory, bool directory_only) {
  sigset_t set = BlockStopSignals(false);
  if (directory_only && directory.empty()) {
    fmt::print(stderr, "{}: --directory-only needs --directory host:port\n", name);
    return 2;
  }
  auto services = StartServices(name, config, directory, directory_only);
  if (!services.ok()) {
    fmt::print(stderr, "{}: {}\n", name, services.status().ToString());
    return 1;
  }
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  fmt::print("{}: stopping on signal {}\n", name, sig);
  return 0;
}

// --- high availability: one leader among several masters, elected through etcd ---

// The exit status of a leader that lost its lease: distinct, so that a supervisor knows to
// restart it (it comes back as a standby) rather than report a crash or a clean stop.
constexpr int kExitLostLeadership = 3;

// What an HA master waits for while it campaigns or leads: a stop signal, or lost leadership.
class HaEvents {
 public:
  void Signal(int sig) { Set([&] { signal_ = sig; }); }
  void Lost(const Status& why) { Set([&] { lost_ = why; }); }
  // Blocks until either happened; the signal number, or 0 for lost leadership (see lost()).
  int Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return signal_ != 0 || !lost_.ok(); });
    return signal_;
  }
  int signal() const {
    std::lock_guard lock(mu_);
    return signal_;
  }
  Status lost() const {
    std::lock_guard lock(mu_);
    return lost_;
  }

 private:
  template <typename F>
  void Set(F f) {
    std::lock_guard lock(mu_);
    f();
    cv_.notify_all();
  }
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int signal_ = 0;
  Status lost_ = OkStatus();
};

// A thread that takes SIGINT/SIGTERM (blocked by BlockStopSignals) and calls on_signal for
// each; the destructor ends it with a SIGUSR1 aimed at it alone.
class SignalTaker {
 public:
  SignalTaker(sigset_t set, std::function<void(int)> on_signal)
      : thread_([this, set, on_signal = std::move(on_signal)] {
          while (true) {
            int sig = 0;
            if (sigwait(&set, &sig) != 0) continue;
            if (closing_.load()) return;
            if (sig != SIGUSR1) on_signal(sig);
          }
        }) {}
  ~SignalTaker() {
    closing_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }
  SignalTaker(const SignalTaker&) = delete;
  SignalTaker& operator=(const SignalTaker&) = delete;

 private:
  std::atomic<bool> closing_{false};
  std::thread thread_;
};

// Why an HA master's settings cannot work (the message), or empty when they can.
std::string CheckHaSettings(const Config& config, const std::string& ha) {
  if (!meta::IsElectedCoordinator(ha)) {
    return fmt::format("--ha takes the etcd endpoints masters elect their leader through "
                       "(etcd://host:port[;host:port...]), not '{}'",
                       ha);
  }
  // A standby on another machine must be able to take over, and peers must dial whoever leads:
  // a unix socket serves neither.
  auto control = net::ParseControlAddress(config.CoordinatorPath());
  if (!control.ok() || !control->tcp) {
    return fmt::format("--ha needs a tcp:// coordinator (config key coordinator, e.g. tcp://0.0.0.0:0 with "
                       "coordinator_listen, or tcp://<this host>:0), not '{}'",
                       config.CoordinatorPath());
  }
  // The coordinator's address is what the leader publishes: a wildcard reaches no one.
  const std::string& host = control->where.host;
  if (host == "0.0.0.0" || host == "::" || host.empty()) {
    return fmt::format("--ha publishes the coordinator's address for peers to dial, and {} names no host: give "
                       "this host's name or address in coordinator and bind the wildcard with coordinator_listen "
                       "(e.g. coordinator=tcp://node1:7000, coordinator_listen=0.0.0.0:7000)",
                       config.CoordinatorPath());
  }
  if (config.cluster_secret.empty()) {
    return "a tcp:// coordinator needs a cluster secret: set WEFT_CLUSTER_SECRET (config key cluster_secret)";
  }
  return {};
}

// The flags both commands share for HA.
struct HaFlags {
  std::string ha;
  uint32_t lease_ms = 5000;
  uint32_t rejoin_ms = 15000;

  void Register(CLI::App& cmd) {
    cmd.add_option("--ha", ha,
                   "Stand by for leadership of the pool, elected through etcd (etcd://h1:2379;h2:2379); serve once "
                   "elected. Peers name the same etcd:// address as their coordinator (docs/store.md)");
    cmd.add_option("--ha-lease-ms", lease_ms,
                   "With --ha: the leader's lease; a dead leader is replaced after about this long")
        ->check(CLI::Range(1000u, 600000u));
    cmd.add_option("--ha-rejoin-ms", rejoin_ms,
                   "With --ha: how long a new leader holds the previous leader's members' ranks for them to rejoin; "
                   "a member not back by then is dropped, with its allocations and objects")
        ->check(CLI::Range(100u, 3600000u));
  }
};

// What the previous leader left in etcd, and a journal that records this leader's changes there
// for as long as it holds the leader key under its lease.
Result<bm::Durability> LoadDurability(const Config& config, meta::Directory& dir, meta::LeaderElection& election,
                                      const HaFlags& ha, Services& services) {
  bm::Durability d;
  d.prefix = bm::StatePrefix(config.pool_name);
  d.rejoin_grace = Millis(ha.rejoin_ms);
  WEFT_ASSIGN_OR_RETURN(d.restored, bm::LoadPoolState(dir, d.prefix, Deadline::After(std::chrono::seconds(30))));
  meta::JournalWriterOptions jo;
  jo.guard = {election.key(), election.lease()};
  jo.metrics = &services.ha_metrics;
  services.journal = std::make_unique<meta::JournalWriter>(dir, jo);
  d.journal = services.journal.get();
  return d;
}

void PrintRestored(const std::string& name, const bm::RestoreSummary& r, uint64_t unreadable) {
  fmt::print("{}: restored {} members, {} allocations and {} store objects from the previous leader", name,
             r.members, r.allocations, r.objects);
  const uint64_t skipped = r.skipped_slices + r.skipped_allocations + r.skipped_objects + unreadable;
  if (skipped != 0) {
    fmt::print(" ({} slices, {} allocations, {} objects and {} unreadable records skipped: see the log)",
               r.skipped_slices, r.skipped_allocations, r.skipped_objects, unreadable);
  }
  fmt::print("\n");
}

// Leads once elected: restores the previous leader's state, starts the services, then publishes
// the coordinator's address. Returns them, or null after printing why (having resigned).
std::unique_ptr<Services> StartLeading(const std::string& name, const Config& config, const std::string& directory,
                                       meta::Directory& dir, meta::LeaderElection& election, const HaFlags& ha) {
  auto made = std::make_unique<Services>();
  auto durable = LoadDurability(config, dir, election, ha, *made);
  Result<std::unique_ptr<Services>> services =
      durable.ok() ? StartServices(name, config, directory, false, std::move(made), &*durable)
                   : Result<std::unique_ptr<Services>>(durable.status().Annotate("loading the previous leader's state"));
  if (services.ok()) PrintRestored(name, (*services)->coordinator->restored(), durable->restored.unreadable);
  Status s = services.ok() ? election.Publish((*services)->coordinator->socket_path()) : services.status();
  if (!s.ok()) {
    fmt::print(stderr, "{}: elected, but could not serve: {}; resigning\n", name, s.ToString());
    if (services.ok()) services->reset();  // stop serving before the key goes
    (void)election.Resign();
    return nullptr;
  }
  return std::move(*services);
}

// `weft meta --ha` / `weft store-master --ha`: campaigns for the pool's leader key; while
// another master leads, stands by; once elected, serves and publishes the coordinator's
// address. A lost lease stops serving at once (exit kExitLostLeadership); SIGINT/SIGTERM stops
// serving, then resigns so that a standby takes over without waiting for the ttl.
int ServeElected(const std::string& name, const Config& config, const std::string& directory, const HaFlags& flags) {
  const std::string& ha = flags.ha;
  const std::chrono::milliseconds ttl = Millis(flags.lease_ms);
  sigset_t set = BlockStopSignals(true);
  // Before any thread starts (they inherit it): a connection etcd closes mid-request is then an
  // error to retry, not a SIGPIPE that ends a standby or a leader.
  meta::BlockSigpipeInThisThread();
  if (std::string why = CheckHaSettings(config, ha); !why.empty()) {
    fmt::print(stderr, "{}: {}\n", name, why);
    return 2;
  }
  meta::DirectoryOptions dopts;
  dopts.cluster_secret = config.cluster_secret;
  auto dir = meta::OpenDirectory(ha, dopts);
  if (!dir.ok()) {
    fmt::print(stderr, "{}: {}\n", name, dir.status().ToString());
    return 2;
  }
  HaEvents events;
  meta::ElectionOptions eo;
  eo.key = meta::LeaderKey(config.pool_name);
  eo.ttl = ttl;  // value: empty until the coordinator is up (ResolveLeader waits for an address)
  eo.on_lost = [&events](const Status& why) { events.Lost(why); };
  meta::LeaderElection election(**dir, eo);
  SignalTaker signals(set, [&](int sig) {
    events.Signal(sig);
    election.Stop();
  });

  auto current = (*dir)->Get(eo.key);
  fmt::print("{}: standby for pool '{}': campaigning for {} in {} (lease ttl {} ms){}\n", name, config.pool_name,
             eo.key, (*dir)->Describe(), ttl.count(),
             current.ok() && !current->empty() ? "; the leader is " + *current : "");
  std::fflush(stdout);
  Status won = election.Campaign(Deadline::Never());
  if (!won.ok() && won.code() != Code::kCancelled) {
    fmt::print(stderr, "{}: {}\n", name, won.ToString());
    return 1;
  }
  if (events.signal() != 0) {  // a signal during the campaign (which may just have won)
    fmt::print("{}: stopping on signal {} (standby)\n", name, events.signal());
    (void)election.Resign();
    return 0;
  }
  fmt::print("{}: elected leader of pool '{}'\n", name, config.pool_name);
  std::unique_ptr<Services> services = StartLeading(name, config, directory, **dir, election, flags);
  if (!services) return 1;
  fmt::print("{}: leads pool '{}' at {} (published under {} in {})\n", name, config.pool_name,
             services->coordinator->socket_path(), eo.key, (*dir)->Describe());
  std::fflush(stdout);

  int sig = events.Wait();
  services.reset();  // stop serving first: never two coordinators answering at once
  if (sig == 0) {
    fmt::print(stderr, "{}: lost the leadership of pool '{}': {}; stopped serving (exit {}; restart it to stand by "
               "again)\n", name, config.pool_name, events.lost().ToString(), kExitLostLeadership);
    return kExitLostLeadership;
  }
  fmt::print("{}: stopping on signal {}: resigning the leadership of pool '{}'\n", name, sig, config.pool_name);
  Status resigned = election.Resign();
  if (!resigned.ok()) fmt::print(stderr, "{}: {} (the key goes when its lease expires)\n", name, resigned.ToString());
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
  auto ha = std::make_shared<HaFlags>();
  ha->Register(*cmd);
  cmd->callback([=] {
    *run = [=] {
      auto config = flags->Load();
      if (!config) return 2;
      if (ha->ha.empty()) return ServeUntilSignal("weft meta", *config, *directory, *directory_only);
      if (*directory_only) {
        fmt::print(stderr, "weft meta: --ha elects a pool coordinator; --directory-only serves none\n");
        return 2;
      }
      return ServeElected("weft meta", *config, *directory, *ha);
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
  auto ha = std::make_shared<HaFlags>();
  ha->Register(*cmd);
  cmd->callback([=] {
    *run = [=] {
      auto config = flags->Load();
      if (!config) return 2;
      if (ha->ha.empty()) return ServeUntilSignal("weft store-master", *config, *directory, false);
      return ServeElected("weft store-master", *config, *directory, *ha);
    };
  });
}

}  // namespace weft::tools
