// `weft bench-store`: the C++ store API (include/weft/store.h) on this host, against memcpy of
// the same bytes and against one bare master round trip, in the same run. Two stores in this
// process join one pool (the first hosts the coordinator and the master): the writer puts, the
// reader gets, so every get crosses from one peer's slice to another's (path shm, or tcp with
// --transport tcp). Cases: put / get / get_into of each --sizes value, and a batch of --batch
// values (put_batch, get_into_batch). Timed puts write new keys (fresh random bytes made before
// the clock starts) and remove them after. Every case is verified once first (every byte
// compared, destinations poisoned); a failure exits 1.
//
// Figures: the median over --rounds of the mean time per call over >= --seconds. The memcpy
// baseline copies the same bytes between two buffers of this process (one thread); the master
// round trip is Store::Exists of a missing key (one service call, no data).
#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <weft/store.h>

#include "base/random.h"
#include "tools/weft/bench_report.h"
#include "tools/weft/cli_config.h"
#include "tools/weft/commands.h"

namespace weft::tools {
namespace {

using Clock = std::chrono::steady_clock;
using store::Buffer;
using store::Span;
using store::Store;

struct Options {
  std::vector<std::string> sizes = {"4K", "1M", "16M"};
  std::string batch = "64x16K";
  double seconds = 0.3;
  int rounds = 3;
  std::string transport = "auto";
  std::string master;  // join this master (tcp:// or etcd://) instead of hosting one
  std::string json;
};

// Median over rounds of the mean µs per call of fn (called with a running index).
double Measure(const Options& o, const std::function<bool(uint64_t)>& fn, bool* failed) {
  std::vector<double> per_round;
  uint64_t i = 0;
  for (int r = 0; r < o.rounds; ++r) {
    uint64_t calls = 0;
    const auto start = Clock::now();
    const auto until = start + std::chrono::duration<double>(o.seconds);
    do {
      if (!fn(i++)) *failed = true;
      ++calls;
    } while (Clock::now() < until && !*failed);
    per_round.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count() / calls);
  }
  std::sort(per_round.begin(), per_round.end());
  return per_round[per_round.size() / 2];
}

struct Row {
  std::string call;
  uint64_t count = 1;
  uint64_t bytes = 0;  // per value
  double us = 0, memcpy_us = 0;
};

class Bench {
 public:
  Bench(Store& writer, Store& reader, const Options& o) : w_(writer), r_(reader), o_(o) {}

  // put, get, get_into of one size; batch put/get of `count` values of `size`.
  bool Case(uint64_t count, uint64_t size, std::vector<Row>& rows);
  // One service call that asks the master for almost nothing: an exists of a missing key.
  double RoundTripUs() {
    bool failed = false;
    return Measure(o_, [&](uint64_t) { return r_.Exists("bench-store/round-trip").ok(); }, &failed);
  }

 private:
  std::vector<std::string> Keys(const std::string& prefix, uint64_t count, uint64_t from) {
    std::vector<std::string> keys;
    for (uint64_t k = 0; k < count; ++k) keys.push_back(fmt::format("{}/{}", prefix, from + k));
    return keys;
  }
  // Why the values did not read back exactly (a call's error, a short read, a differing byte);
  // nothing when they did.
  std::optional<std::string> Verify(uint64_t count, uint64_t size);
  // Prints why a timed call failed (the first time) and returns false.
  bool Report(const char* call, const Status& s) {
    if (!reported_) fmt::print(stderr, "weft bench-store: {} failed: {}\n", call, s.ToString());
    reported_ = true;
    return false;
  }

  Store& w_;
  Store& r_;
  const Options& o_;
  uint64_t serial_ = 0;
  bool reported_ = false;
};

std::optional<std::string> Bench::Verify(uint64_t count, uint64_t size) {
  const uint64_t seed = FreshSeed();
  std::vector<uint8_t> value(count * size), back(count * size, 0xA5);
  FillRandom(value.data(), value.size(), seed);
  const auto keys = Keys("verify", count, serial_);
  serial_ += count;
  std::vector<Span> spans;
  std::vector<Buffer> buffers;
  for (uint64_t k = 0; k < count; ++k) {
    spans.push_back({value.data() + k * size, size});
    buffers.push_back({back.data() + k * size, size});
  }
  std::optional<std::string> why;
  auto failed = [&](const char* call, const Status& s) {
    if (!why && !s.ok()) why = fmt::format("{}: {}", call, s.ToString());
  };
  failed("register_buffer", r_.RegisterBuffer(back.data(), back.size()));
  for (const Status& s : w_.PutBatch(keys, spans)) failed("put_batch", s);
  for (const auto& n : r_.GetIntoBatch(keys, buffers)) {
    failed("get_into_batch", n.status());
    if (n.ok() && *n != size && !why) why = fmt::format("get_into_batch read {} of {} bytes", *n, size);
  }
  if (auto bad = FirstMismatch(back.data(), back.size(), seed); bad && !why)
    why = fmt::format("byte {} of {} differs", *bad, back.size());
  (void)r_.UnregisterBuffer(back.data());
  for (const Status& s : w_.RemoveBatch(keys, true)) failed("remove_batch", s);
  return why;
}

bool Bench::Case(uint64_t count, uint64_t size, std::vector<Row>& rows) {
  if (auto why = Verify(count, size)) {
    fmt::print(stderr, "weft bench-store: {} x {} did not read back exactly: {}\n", count, FormatBytes(size), *why);
    return false;
  }
  // Enough distinct values that the timed puts never rewrite a key: new bytes, new keys.
  std::vector<uint8_t> src(count * size), dst(count * size);
  FillRandom(src.data(), src.size(), FreshSeed());
  std::memset(dst.data(), 0, dst.size());
  (void)r_.RegisterBuffer(dst.data(), dst.size());
  std::vector<Span> spans;
  std::vector<Buffer> buffers;
  for (uint64_t k = 0; k < count; ++k) {
    spans.push_back({src.data() + k * size, size});
    buffers.push_back({dst.data() + k * size, size});
  }
  bool failed = false;
  const double memcpy_us = Measure(o_, [&](uint64_t) {
    std::memcpy(dst.data(), src.data(), src.size());
    return true;
  }, &failed);
  const std::string prefix = fmt::format("bench{}x{}", count, size);
  const double put_us = Measure(o_, [&](uint64_t) {
    const auto keys = Keys(prefix, count, serial_);
    serial_ += count;
    for (const Status& s : w_.PutBatch(keys, spans)) {
      if (!s.ok()) return Report("put", s);
    }
    return true;
  }, &failed);
  const auto read_keys = Keys(prefix, count, serial_ - count);  // the last timed put's: never evicted yet
  const double get_into_us = Measure(o_, [&](uint64_t) {
    for (const auto& n : r_.GetIntoBatch(read_keys, buffers)) {
      if (!n.ok()) return Report("get_into", n.status());
    }
    return true;
  }, &failed);
  double get_us = 0;
  if (count == 1) {
    get_us = Measure(o_, [&](uint64_t) {
      auto got = r_.Get(read_keys[0]);
      return got.ok() || Report("get", got.status());
    }, &failed);
  }
  (void)r_.UnregisterBuffer(dst.data());
  (void)w_.RemoveByRegex("^" + prefix + "/", true);
  if (failed) {
    fmt::print(stderr, "weft bench-store: a timed call of {} x {} failed\n", count, FormatBytes(size));
    return false;
  }
  const std::string batch = count > 1 ? "_batch" : "";
  rows.push_back({"put" + batch, count, size, put_us, memcpy_us});
  if (count == 1) rows.push_back({"get", count, size, get_us, memcpy_us});
  rows.push_back({"get_into" + batch, count, size, get_into_us, memcpy_us});
  return true;
}

int Run(const Options& o, const ConfigFlags& flags) {
  auto config = flags.Load();
  if (!config) return 2;
  std::vector<uint64_t> sizes;
  for (const auto& s : o.sizes) {
    auto b = ParseBytes(s);
    if (!b.ok() || *b == 0) {
      fmt::print(stderr, "weft bench-store: bad size '{}'\n", s);
      return 2;
    }
    sizes.push_back(*b);
  }
  const auto x = o.batch.find('x');
  auto batch_count = ParseBytes(o.batch.substr(0, x));
  auto batch_size = ParseBytes(x == std::string::npos ? "" : o.batch.substr(x + 1));
  if (x == std::string::npos || !batch_count.ok() || !batch_size.ok() || *batch_count == 0 || *batch_size == 0) {
    fmt::print(stderr, "weft bench-store: --batch wants COUNTxSIZE, such as 64x16K\n");
    return 2;
  }
  const uint64_t largest = std::max(*std::max_element(sizes.begin(), sizes.end()), *batch_count * *batch_size);
  bm::JoinMode writer_mode = bm::JoinMode::kHost;
  if (o.master.empty()) {
    config->pool_name = fmt::format("bench-store-{}", ::getpid());
    config->coordinator = fmt::format("/tmp/weft-{}.sock", config->pool_name);
  } else {  // the pool of a master running alone (its pool_name and rank_size come from --set)
    config->coordinator = o.master;
    writer_mode = bm::JoinMode::kJoin;
  }
  config->transport = o.transport;
  if (o.transport == "tcp" && config->cluster_secret.empty()) config->cluster_secret = "bench-store-" + std::to_string(FreshSeed());
  // Room for every timed put of the largest case without eviction at the watermark.
  if (o.master.empty()) {
    config->rank_size = std::max<uint64_t>(config->rank_size, largest * 64);
    config->store_high_watermark_pct = 100;
  }
  auto writer = Store::Open(*config, writer_mode);
  auto reader = writer.ok() ? Store::Open(*config, bm::JoinMode::kJoin) : writer.status();
  if (!writer.ok() || !reader.ok()) {
    fmt::print(stderr, "weft bench-store: {}\n", (writer.ok() ? reader.status() : writer.status()).ToString());
    return 1;
  }
  Bench bench(**writer, **reader, o);
  std::vector<Row> rows;
  for (uint64_t size : sizes) {
    fmt::print(stderr, "weft bench-store: {} ...\n", FormatBytes(size));
    if (!bench.Case(1, size, rows)) return 1;
  }
  fmt::print(stderr, "weft bench-store: {} ...\n", o.batch);
  if (!bench.Case(*batch_count, *batch_size, rows)) return 1;
  const double rtt = bench.RoundTripUs();
  const auto machine = bench::ReadMachineInfo();
  fmt::print("weft bench-store: the C++ store API, writer and reader peers in one process, transport {}, master {}\n",
             o.transport, o.master.empty() ? "hosted by the writer" : o.master);
  fmt::print("master round trip (exists of a missing key): {:.1f} us; figures: median of {} rounds of >= {} s\n", rtt, o.rounds,
             o.seconds);
  fmt::print("{:<16} {:>12} {:>12} {:>10} {:>12} {:>14}\n", "call", "values", "us/call", "GB/s", "memcpy us",
             "memcpy/weft");
  nlohmann::json json = bench::RunJson("bench-store", machine);
  json["transport"] = o.transport;
  json["master"] = o.master.empty() ? "hosted by the writer" : o.master;
  json["master_round_trip_us"] = rtt;
  for (const Row& r : rows) {
    const double gbps = static_cast<double>(r.count * r.bytes) / (r.us * 1e3);
    fmt::print("{:<16} {:>12} {:>12.1f} {:>10.2f} {:>12.1f} {:>14.3f}\n", r.call,
               fmt::format("{} x {}", r.count, FormatBytes(r.bytes)), r.us, gbps, r.memcpy_us, r.memcpy_us / r.us);
    json["rows"].push_back({{"call", r.call}, {"count", r.count}, {"bytes", r.bytes}, {"us", r.us},
                            {"gbps", gbps}, {"memcpy_us", r.memcpy_us}, {"ratio_to_memcpy", r.memcpy_us / r.us}});
  }
  if (!o.json.empty()) {
    if (Status s = bench::WriteJson(o.json, json); !s.ok()) {
      fmt::print(stderr, "weft bench-store: {}\n", s.ToString());
      return 1;
    }
  }
  return 0;
}

}  // namespace

void AddBenchStore(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("bench-store", "The C++ store API: put/get/get_into and batches vs memcpy");
  auto o = std::make_shared<Options>();
  auto flags = std::make_shared<ConfigFlags>();
  flags->Register(*cmd);
  cmd->add_option("--sizes", o->sizes, "Value sizes (default 4K 1M 16M)");
  cmd->add_option("--batch", o->batch, "The batch case, COUNTxSIZE (default 64x16K)");
  cmd->add_option("--seconds", o->seconds, "Least time of one round of a case (default 0.3)");
  cmd->add_option("--rounds", o->rounds, "Rounds per case; the median is reported (default 3)")->check(CLI::Range(1, 100));
  cmd->add_option("--transport", o->transport, "How the reader reaches the writer's slice: auto (shm) or tcp");
  cmd->add_option("--master", o->master,
                  "Join the store master running alone at this address (tcp://host:port, or etcd://... for HA "
                  "masters) instead of hosting one; --set pool_name and rank_size as it has them, transport tcp");
  cmd->add_option("--json", o->json, "Also write the figures to this JSON file");
  cmd->callback([=] { *run = [=] { return Run(*o, *flags); }; });
}

}  // namespace weft::tools
