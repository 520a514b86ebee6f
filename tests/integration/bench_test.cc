// `weft bench` end to end: the quick run exits 0 and writes JSON with a verified row, a positive
// bandwidth and a memcpy baseline for every direction; a missing matplotlib costs only the PNG;
// bad input fails with a message and writes nothing. Asserts behaviour, never a speed.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

}  // namespace
