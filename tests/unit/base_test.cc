#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <weft/config.h>

#include <spdlog/sinks/ostream_sink.h>

#include "base/log.h"
#include "base/metrics.h"
#include "base/random.h"
#include "base/status.h"
#include "base/worker_pool.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>

namespace weft {
namespace {

TEST(Status, CodesHaveStableNames) {
  EXPECT_EQ(CodeName(Code::kPeerDown), "PEER_DOWN");
  EXPECT_EQ(CodeName(Code::kPoolFull), "POOL_FULL");
  EXPECT_EQ(static_cast<int>(Code::kPeerDown), 6);  // part of the C API: never renumber
  Status s = Error(Code::kOutOfRange, "offset {} past {}", 10, 5);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "OUT_OF_RANGE: offset 10 past 5");
  EXPECT_EQ(s.Annotate("copy").message(), "copy: offset 10 past 5");
  EXPECT_EQ(s.Annotate("copy").code(), Code::kOutOfRange);
}

Result<int> Half(int x) {
  if (x % 2) return Error(Code::kInvalidArgument, "{} is odd", x);
  return x / 2;
}

Result<int> Quarter(int x) {
  WEFT_ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(Result, PropagatesErrors) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "3 is odd");
  Result<int> from_ok{Status::Ok()};  // misuse is caught, not UB
  EXPECT_EQ(from_ok.status().code(), Code::kInternal);
}

TEST(Config, ParsesSizes) {
  EXPECT_EQ(*ParseBytes("4096"), 4096u);
  EXPECT_EQ(*ParseBytes("64KiB"), 64u << 10);
  EXPECT_EQ(*ParseBytes("256MiB"), 256u << 20);
  EXPECT_EQ(*ParseBytes("2G"), 2ull << 30);
  EXPECT_EQ(ParseBytes("12XB").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseBytes("").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseBytes("99999999999999999999").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseBytes("99999999999T").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(FormatBytes(64 << 20), "64MiB");
  EXPECT_EQ(FormatBytes(1000), "1000B");
}

TEST(Config, LayersDefaultsFileEnvOverrides) {
  char path[] = "/tmp/weft-config-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << R"({"pool_name": "from-file", "rank_size": "32MiB", "copy_threads": 3, "unified_va": true})";
  }
  setenv("WEFT_COPY_THREADS", "5", 1);
  setenv("WEFT_POOL_NAME", "from-env", 1);
  auto c = LoadConfig(path, {{"pool_name", "from-arg"}});
  unsetenv("WEFT_COPY_THREADS");
  unsetenv("WEFT_POOL_NAME");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->pool_name, "from-arg");       // argument beats env and file
  EXPECT_EQ(c->copy_threads, 5u);            // env beats file
  EXPECT_EQ(c->rank_size, 32u << 20);        // file beats default
  EXPECT_TRUE(c->unified_va);
  EXPECT_EQ(c->heartbeat_ms, Config{}.heartbeat_ms);  // default stays
  EXPECT_EQ(c->CoordinatorPath(), "/tmp/weft-from-arg.sock");
  std::remove(path);
}

TEST(Config, RejectsBadInputWithTheKeyNamed) {
  auto unknown = LoadConfig("", {{"no_such_key", "1"}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), Code::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("no_such_key"), std::string::npos);
  auto bad = LoadConfig("", {{"copy_threads", "many"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("copy_threads"), std::string::npos);
  EXPECT_EQ(LoadConfig("", {{"unified_va", "maybe"}}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(LoadConfig("/nonexistent/weft.json").status().code(), Code::kNotFound);
  setenv("WEFT_RANK_SIZE", "lots", 1);
  auto env = LoadConfig();
  unsetenv("WEFT_RANK_SIZE");
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.status().message().find("WEFT_RANK_SIZE"), std::string::npos);
}

// Every key has a range; a value outside it is INVALID_ARGUMENT naming the key and the range
// (copy_threads=100000 used to start 100000 threads and terminate the process).
TEST(Config, ValuesOutOfRangeAreRefusedWithTheKeyAndRange) {
  struct Case {
    const char* key;
    const char* value;
    const char* range;
  };
  for (const Case& c : {Case{"copy_threads", "100000", "0..256"}, Case{"tcp_lanes", "0", "1..64"},
                        Case{"tcp_lanes", "100000", "1..64"}, Case{"max_ranks", "0", "1..65536"},
                        Case{"max_ranks", "4000000000", "1..65536"}, Case{"heartbeat_ms", "0", "1..3600000"},
                        Case{"numa_node", "-2", "-1..1023"}, Case{"numa_node", "-4294967295", "-1..1023"},
                        Case{"copy_threads", "99999999999999999999999", "0..256"}, Case{"unified_va", "maybe", "true, false"}, Case{"rank_size", "2TiB", "1B..1TiB"},
                        Case{"log_level", "loud", "trace, debug, info, warn, error, off"},
                        Case{"pool_name", "", "1..64 characters"}, Case{"pool_name", "a/b", "no '/'"}}) {
    auto r = LoadConfig("", {{c.key, c.value}});
    ASSERT_FALSE(r.ok()) << c.key << "=" << c.value << " was accepted";
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.key), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.range), std::string::npos) << r.status().ToString();
    Config config;
    EXPECT_EQ(SetConfigValue(config, c.key, c.value).code(), Code::kInvalidArgument) << c.key << "=" << c.value;
  }
  // The bounds themselves are in range; a refused value leaves the config as it was.
  Config config;
  EXPECT_TRUE(SetConfigValue(config, "copy_threads", "256").ok());
  EXPECT_FALSE(SetConfigValue(config, "copy_threads", "257").ok());
  EXPECT_EQ(config.copy_threads, 256u);
  for (const char* level : {"trace", "debug", "info", "warn", "error", "off"})
    EXPECT_TRUE(SetConfigValue(config, "log_level", level).ok()) << level;
  // A Config built in C++ is checked too (Pool::Join calls CheckConfig).
  Config direct;
  direct.copy_threads = 100000;
  Status s = CheckConfig(direct);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("copy_threads"), std::string::npos) << s.ToString();
  EXPECT_TRUE(CheckConfig(Config{}).ok()) << CheckConfig(Config{}).ToString();
  // Every key documents its range.
  for (const auto& key : ConfigKeys()) EXPECT_FALSE(key.range.empty()) << key.name;
}

// A config path that is a directory is refused with a reason, not std::ios_failure.
TEST(Config, ADirectoryAsConfigFileIsRefused) {
  auto r = LoadConfig("/tmp");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find("is a directory"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("/tmp"), std::string::npos) << r.status().ToString();
}

TEST(Config, EveryKeyIsDocumented) {
  std::ifstream f(WEFT_SOURCE_DIR "/docs/config.md");
  ASSERT_TRUE(f) << "docs/config.md is missing";
  std::stringstream text;
  text << f.rdbuf();
  for (const auto& key : ConfigKeys()) {
    EXPECT_NE(text.str().find("`" + key.name + "`"), std::string::npos) << key.name << " is not in docs/config.md";
    EXPECT_NE(text.str().find(key.env), std::string::npos) << key.env << " is not in docs/config.md";
  }
  // The table itself, ranges included.
  EXPECT_NE(text.str().find(ConfigMarkdown()), std::string::npos)
      << "docs/config.md is out of date: regenerate it with `weft config --markdown`";
}

// A thread that cannot start (here: no address space left for its stack) makes the constructor
// throw std::system_error, which a caller (the C API's Guard) turns into an error. It used to
// terminate the process: the threads already started were left joinable. In a child process,
// under an address-space limit a little above what it uses.
TEST(WorkerPool, AThreadThatCannotStartIsAnExceptionNotTermination) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "an address-space limit does not combine with ASAN's shadow memory";
#else
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    if (pages == 0) _exit(4);
    const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + (64u << 20);
    const rlimit rl{limit, limit};
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(5);
    try {
      WorkerPool pool(100000);
      _exit(2);  // every thread started: the limit did not bite
    } catch (const std::system_error&) {
      _exit(0);
    } catch (...) {
      _exit(3);
    }
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: the limit did not bite, 3: another exception, 4/5: setup";
#endif
}

// The load the metrics publish: tasks waiting for a thread and threads running one, both back
// to zero once the work is done. Two threads held by latches, three tasks queued behind them.
TEST(WorkerPool, LoadCountsQueuedTasksAndBusyThreads) {
  WorkerPool pool(2);
  EXPECT_EQ(pool.load().queued, 0u);
  EXPECT_EQ(pool.load().running, 0u);
  std::mutex mu;
  std::condition_variable cv;
  unsigned started = 0;
  bool release = false;
  std::atomic<unsigned> done{0};
  for (int i = 0; i < 5; ++i) {
    pool.Submit([&] {
      std::unique_lock lock(mu);
      ++started;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      ++done;
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return started == 2; }));
  }
  const WorkerPool::Load held = pool.load();
  EXPECT_EQ(held.running, 2u);
  EXPECT_EQ(held.queued, 3u);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (int i = 0; i < 30000 && (done.load() < 5 || pool.load().running != 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(done.load(), 5u);
  EXPECT_EQ(pool.load().queued, 0u);
  EXPECT_EQ(pool.load().running, 0u);
}

TEST(Metrics, CountsAndRendersPrometheusText) {
  MetricsRegistry m;
  m.counter("weft_test_total", "things")->Add(3);
  m.counter("weft_test_total")->Add(2);
  m.gauge("weft_test_gauge")->Set(-4);
  auto* h = m.histogram("weft_test_ns");
  for (uint64_t v : {1, 2, 3, 1000, 1000000}) h->Observe(v);
  EXPECT_EQ(m.counter("weft_test_total")->value(), 5u);
  EXPECT_EQ(h->count(), 5u);
  EXPECT_EQ(h->sum(), 1001006u);
  EXPECT_EQ(h->Quantile(0.5), 4u);         // 3 falls in the (2, 4] bucket
  EXPECT_GE(h->Quantile(1.0), 1000000u);
  std::string text = m.PrometheusText();
  EXPECT_NE(text.find("# TYPE weft_test_total counter\nweft_test_total 5\n"), std::string::npos);
  EXPECT_NE(text.find("weft_test_gauge -4"), std::string::npos);
  EXPECT_NE(text.find("weft_test_ns_count 5"), std::string::npos);
  EXPECT_NE(text.find("weft_test_ns_bucket{le=\"+Inf\"} 5"), std::string::npos);
}

// Labelled series of one family render together under one HELP and TYPE, even where another
// name sorts between them.
TEST(Metrics, LabelledSeriesShareTheirFamilysHeader) {
  MetricsRegistry m;
  m.counter("weft_x_total{code=\"POOL_FULL\"}", "errors by code")->Add(2);
  m.counter("weft_x_total_bytes", "bytes")->Add(9);
  m.counter("weft_x_total{code=\"NOT_FOUND\"}", "errors by code")->Add(1);
  EXPECT_EQ(m.PrometheusText(),
            "# HELP weft_x_total errors by code\n# TYPE weft_x_total counter\n"
            "weft_x_total{code=\"NOT_FOUND\"} 1\nweft_x_total{code=\"POOL_FULL\"} 2\n"
            "# HELP weft_x_total_bytes bytes\n# TYPE weft_x_total_bytes counter\nweft_x_total_bytes 9\n");
}

// A scrape hook sets its series each time the registry is rendered, and never runs once its
// handle is gone.
TEST(Metrics, ScrapeHooksRunAtEachRenderingUntilTheirHandleGoes) {
  MetricsRegistry m;
  uint64_t source = 7;
  int runs = 0;
  Counter* mirrored = m.counter("weft_mirror_total", "a total kept elsewhere");
  auto hook = m.OnScrape([&] {
    ++runs;
    mirrored->SetTotal(source);
  });
  EXPECT_NE(m.PrometheusText().find("weft_mirror_total 7\n"), std::string::npos);
  source = 12;
  EXPECT_NE(m.PrometheusText().find("weft_mirror_total 12\n"), std::string::npos);
  EXPECT_EQ(runs, 2);
  hook.reset();
  source = 99;
  EXPECT_NE(m.PrometheusText().find("weft_mirror_total 12\n"), std::string::npos);
  EXPECT_EQ(runs, 2);
}

// A call site behind a RateLimitedLog writes at most its lines per interval; the rest are
// counted and reported in one line when the interval is over.
TEST(Log, RateLimitedLogWritesAtMostItsLinesThenACount) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto& sinks = log::Get().sinks();
  sinks.push_back(sink);
  log::RateLimitedLog limited("test site", spdlog::level::warn, 3, std::chrono::milliseconds(200));
  for (int i = 0; i < 100; ++i) limited("flood line {}", i);
  EXPECT_EQ(limited.written(), 3u);
  EXPECT_EQ(limited.suppressed(), 97u);
  limited.Flush();  // the interval is not over: nothing yet
  EXPECT_EQ(out.str().find("suppressed"), std::string::npos) << out.str();
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  limited.Flush();
  limited("after the interval");
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
  const std::string text = out.str();
  EXPECT_NE(text.find("flood line 2"), std::string::npos) << text;
  EXPECT_EQ(text.find("flood line 3"), std::string::npos) << text;
  EXPECT_NE(text.find("test site: 97 similar messages suppressed"), std::string::npos) << text;
  EXPECT_NE(text.find("after the interval"), std::string::npos) << text;
  EXPECT_EQ(limited.written(), 5u);  // 3, the count, and the one after
}

TEST(Random, SameSeedSameBytesAndMismatchFound) {
  std::vector<uint8_t> a(1001), b(1001);
  FillRandom(a.data(), a.size(), 42);
  FillRandom(b.data(), b.size(), 42);
  EXPECT_EQ(a, b);
  EXPECT_FALSE(FirstMismatch(a.data(), a.size(), 42).has_value());
  a[1000] ^= 1;
  EXPECT_EQ(FirstMismatch(a.data(), a.size(), 42), 1000u);
  EXPECT_EQ(FirstMismatch(a.data(), a.size(), 43), 0u);
}

}  // namespace
}  // namespace weft
