// `weft bench` end to end: the quick run exits 0 and writes JSON with a verified row, a positive
// bandwidth and a memcpy baseline for every direction; a missing matplotlib costs only the PNG;
// bad input fails with a message and writes nothing. `weft bench-ucx --quick`: every row verified
// with all three columns and positive ratios, the machine facts in the JSON; without
// ucx_perftest the weft columns still run and the exit status says partial. Asserts behaviour,
// never a speed.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

namespace {

struct ShellResult {
  int status = -1;  // exit status, or -1 if it did not exit normally
  std::string output;  // stdout and stderr together
};

ShellResult Shell(const std::string& command) {
  ShellResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  if (status != -1 && WIFEXITED(status)) r.status = WEXITSTATUS(status);
  return r;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

class BenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/weft-bench-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty() && !::testing::Test::HasFailure()) Shell("rm -rf '" + dir_ + "'");
  }
  std::string dir_;
};

TEST_F(BenchTest, QuickRunWritesVerifiedRowsForEveryDirection) {
  const std::string json_path = dir_ + "/bench.json";
  ShellResult r = Shell(std::string(WEFT_BINARY) + " bench --quick --json " + json_path);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("memcpy GB/s"), std::string::npos) << r.output;  // the table

  std::ifstream in(json_path);
  ASSERT_TRUE(in) << "no JSON at " << json_path;
  auto doc = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  EXPECT_FALSE(doc["machine"]["cpu_model"].get<std::string>().empty());
  EXPECT_GT(doc["machine"]["nproc"].get<int>(), 0);
  EXPECT_FALSE(doc["machine"]["kernel"].get<std::string>().empty());
  EXPECT_FALSE(doc["weft_version"].get<std::string>().empty());
  EXPECT_NE(doc["command"].get<std::string>().find("bench --quick --json"), std::string::npos);
  EXPECT_FALSE(doc["settings"]["baseline"].get<std::string>().empty());

  ASSERT_TRUE(doc["rows"].is_array());
  std::set<std::string> directions;
  bool latency_4k = false;
  for (const auto& row : doc["rows"]) {
    SCOPED_TRACE(row.dump());
    EXPECT_TRUE(row["verified"].get<bool>());
    EXPECT_GT(row["weft_gbps"].get<double>(), 0);
    EXPECT_GT(row["memcpy_gbps"].get<double>(), 0);
    EXPECT_GT(row["ratio"].get<double>(), 0);
    EXPECT_GE(row["block"].get<uint64_t>(), 4096u);
    const std::string dir = row["direction"].get<std::string>();
    directions.insert(dir);
    EXPECT_EQ(row["path"].get<std::string>(), dir == "LH2LH" ? "memcpy" : "shm");
    if (row["block"].get<uint64_t>() == 4096 && row["batch"].get<uint64_t>() == 1) {
      ASSERT_TRUE(row["latency"].is_object());
      const auto& lat = row["latency"];
      EXPECT_GT(lat["weft_p50_ns"].get<double>(), 0);
      EXPECT_GE(lat["weft_p99_ns"].get<double>(), lat["weft_p50_ns"].get<double>());
      EXPECT_GT(lat["memcpy_p50_ns"].get<double>(), 0);
      EXPECT_GE(lat["memcpy_p99_ns"].get<double>(), lat["memcpy_p50_ns"].get<double>());
      latency_4k = true;
    }
  }
  EXPECT_EQ(directions, (std::set<std::string>{"LH2GH", "GH2LH", "GH2GH", "LH2LH"}));
  EXPECT_TRUE(latency_4k);
}

TEST_F(BenchTest, BatchesAndSeveralThreadCounts) {
  const std::string json_path = dir_ + "/bench.json";
  ShellResult r = Shell(std::string(WEFT_BINARY) + " bench --quick --no-progress --max 1MiB --batch 1,4 --threads 1,2 "
                "--directions GH2LH,LH2GH --latency-iters 0 --json " + json_path);
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(json_path);
  auto doc = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  // 2 directions x 3 blocks (4KiB, 64KiB, 1MiB) x 2 batches x 2 thread counts.
  EXPECT_EQ(doc["rows"].size(), 24u);
  std::set<std::pair<uint64_t, uint32_t>> combos;
  for (const auto& row : doc["rows"]) {
    combos.insert({row["batch"].get<uint64_t>(), row["threads"].get<uint32_t>()});
    EXPECT_GT(row["weft_gbps"].get<double>(), 0);
    EXPECT_TRUE(row["latency"].is_null());
  }
  EXPECT_EQ(combos.size(), 4u);
}

TEST_F(BenchTest, MissingMatplotlibOnlyCostsThePng) {
  // A matplotlib that fails to import stands in for a machine without it.
  const std::string fake = dir_ + "/fake-python";
  ASSERT_EQ(Shell("mkdir -p '" + fake + "/matplotlib'").status, 0);
  std::ofstream(fake + "/matplotlib/__init__.py") << "raise ImportError('matplotlib hidden by bench_test')\n";
  const std::string json_path = dir_ + "/bench.json", png_path = dir_ + "/bench.png";
  ShellResult r = Shell("PYTHONPATH='" + fake + "' " + std::string(WEFT_BINARY) +
                " bench --quick --no-progress --max 64KiB --directions LH2LH --json " + json_path + " --png " +
                png_path);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(Exists(json_path));
  EXPECT_FALSE(Exists(png_path));
  // Whether python3 itself is there or not, the message says how to get the plot.
  EXPECT_NE(r.output.find("make deps"), std::string::npos) << r.output;
}

TEST_F(BenchTest, BadInputFailsWithAMessageAndWritesNothing) {
  const std::string json_path = dir_ + "/bench.json";
  ShellResult small = Shell(std::string(WEFT_BINARY) + " bench --quick --size 1MiB --json " + json_path);
  EXPECT_NE(small.status, 0) << small.output;
  EXPECT_NE(small.output.find("too small"), std::string::npos) << small.output;
  ShellResult dir = Shell(std::string(WEFT_BINARY) + " bench --quick --directions LH2XX --json " + json_path);
  EXPECT_NE(dir.status, 0) << dir.output;
  EXPECT_NE(dir.output.find("unknown direction"), std::string::npos) << dir.output;
  ShellResult block = Shell(std::string(WEFT_BINARY) + " bench --quick --min 1000 --json " + json_path);
  EXPECT_NE(block.status, 0) << block.output;
  EXPECT_FALSE(Exists(json_path));
}

// The ucx bench needs UCX (the weft build's headers and the library) and ucx-utils' ucx_perftest;
// scripts/install-deps.sh installs both, so CI runs these.
std::string UcxSkipReason(const ShellResult& r) {
  if (r.status == 2 && (r.output.find("without UCX") != std::string::npos ||
                        r.output.find("no UCX library") != std::string::npos))
    return "no UCX here: " + r.output;
  return "";
}

TEST_F(BenchTest, UcxQuickRunComparesWeftWithUcxPerftest) {
  if (Shell("command -v ucx_perftest").status != 0)
    GTEST_SKIP() << "ucx_perftest is not installed (apt-get install ucx-utils, or scripts/install-deps.sh)";
  const std::string json_path = dir_ + "/ucx.json";
  ShellResult r = Shell(std::string(WEFT_BINARY) +
                        " bench-ucx --quick --sizes 64K,1M --latency-sizes 8,4K --json " + json_path);
  if (std::string why = UcxSkipReason(r); !why.empty()) GTEST_SKIP() << why;
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("ucx_perftest"), std::string::npos) << r.output;  // the table
  EXPECT_NE(r.output.find("verified: every case"), std::string::npos) << r.output;

  std::ifstream in(json_path);
  ASSERT_TRUE(in) << "no JSON at " << json_path;
  auto doc = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  EXPECT_EQ(doc["tool"], "weft bench-ucx");
  EXPECT_TRUE(doc["complete"].get<bool>());
  EXPECT_EQ(doc["exit_code"].get<int>(), 0);
  const auto& m = doc["machine"];
  EXPECT_FALSE(m["cpu_model"].get<std::string>().empty());
  EXPECT_GT(m["nproc"].get<int>(), 0);
  EXPECT_EQ(m["ucx_version"].get<std::string>().rfind("1.", 0), 0u) << m.dump();
  EXPECT_EQ(m["ucx_tls"], "tcp");
  EXPECT_FALSE(m["perftest_path"].get<std::string>().empty());
  EXPECT_NE(doc["settings"]["weft_ucx_route"].get<std::string>().find("via ucx"), std::string::npos);

  ASSERT_TRUE(doc["rows"].is_array());
  std::set<std::string> seen;
  for (const auto& row : doc["rows"]) {
    SCOPED_TRACE(row.dump());
    const std::string kind = row["kind"].get<std::string>(), op = row["op"].get<std::string>();
    seen.insert(kind + " " + op + " " + std::to_string(row["size"].get<uint64_t>()));
    EXPECT_EQ(row["unit"], kind == "latency" ? "us" : "GB/s");
    EXPECT_TRUE(row["verified"].get<bool>());
    EXPECT_TRUE(row["perftest_error"].is_null());
    EXPECT_EQ(row["perftest_test"], op == "put" ? (kind == "latency" ? "ucp_put_lat" : "ucp_put_bw") : "ucp_get");
    for (const char* key : {"perftest", "weft_ucx", "weft_tcp", "ratio_ucx_perftest", "ratio_ucx_tcp"}) {
      ASSERT_TRUE(row[key].is_number()) << key;
      EXPECT_GT(row[key].get<double>(), 0) << key;
      EXPECT_TRUE(std::isfinite(row[key].get<double>())) << key;
    }
  }
  EXPECT_EQ(seen, (std::set<std::string>{"bandwidth put 65536", "bandwidth put 1048576", "bandwidth get 65536",
                                         "bandwidth get 1048576", "latency put 8", "latency put 4096",
                                         "latency get 8", "latency get 4096"}));
}

TEST_F(BenchTest, UcxWithoutPerftestStillRunsWeftAndSaysPartial) {
  const std::string json_path = dir_ + "/ucx.json";
  // Three callers at once in the bandwidth rows, each verified on its own part of the buffers.
  ShellResult r = Shell(std::string(WEFT_BINARY) + " bench-ucx --quick --sizes 64K --latency-sizes 8 --threads 3 " +
                        "--perftest " + dir_ + "/no-such-ucx_perftest --json " + json_path);
  if (std::string why = UcxSkipReason(r); !why.empty()) GTEST_SKIP() << why;
  ASSERT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("not found"), std::string::npos) << r.output;
  std::ifstream in(json_path);
  auto doc = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  EXPECT_FALSE(doc["complete"].get<bool>());
  EXPECT_EQ(doc["settings"]["weft_threads"].get<int>(), 3);
  EXPECT_EQ(doc["settings"]["perftest_window"].get<int>(), 3) << "ucx_perftest gets as many ops in flight";
  ASSERT_EQ(doc["rows"].size(), 4u);
  for (const auto& row : doc["rows"]) {
    SCOPED_TRACE(row.dump());
    EXPECT_TRUE(row["perftest"].is_null());
    EXPECT_TRUE(row["ratio_ucx_perftest"].is_null());
    EXPECT_NE(row["perftest_error"].get<std::string>().find("not found"), std::string::npos);
    EXPECT_GT(row["weft_ucx"].get<double>(), 0);
    EXPECT_GT(row["weft_tcp"].get<double>(), 0);
    EXPECT_GT(row["ratio_ucx_tcp"].get<double>(), 0);
    EXPECT_TRUE(row["verified"].get<bool>());
  }
}

TEST_F(BenchTest, UcxBadOptionsExit2) {
  for (const char* bad : {"--sizes 4", "--threads 0", "--threads 65", "--perftest-window -1"}) {
    ShellResult r = Shell(std::string(WEFT_BINARY) + " bench-ucx --quick " + bad + " --json " + dir_ + "/x.json");
    EXPECT_EQ(r.status, 2) << bad << ": " << r.output;
    EXPECT_FALSE(Exists(dir_ + "/x.json")) << bad;
  }
}

}  // namespace
