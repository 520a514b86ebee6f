// `weft soak` end to end: a short soak over shm and tcp (tcp peers in network namespaces when
// root, so link cuts are among the faults) must finish with no mismatch, no hang, every fault of
// every kind injected and answered; and the soak must see what it is for: a corrupted byte is a
// mismatch and an op that does not return is a hang, each failing the run.
//
// The issue asks CI for a 2-minute soak; on this project's 2-core CI the suite runs two tests at
// a time, so the soak here is 40 s (20 s per transport) and docs/ops.md records longer runs.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace {

struct CommandRun {
  int exit_code = -1;
  std::string output;
};

CommandRun Shell(const std::string& cmd) {
  CommandRun r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Runs `weft soak <args> --json <file>` and returns the exit code, the output and the report.
struct Soak {
  CommandRun run;
  nlohmann::json report;
};

Soak RunSoak(const std::string& args) {
  const std::string json = "/tmp/weft-soak-test-" + std::to_string(::getpid()) + ".json";
  Soak s;
  s.run = Shell(std::string(WEFT_BINARY) + " soak " + args + " --json " + json);
  std::ifstream in(json);
  if (in) s.report = nlohmann::json::parse(in, nullptr, false);
  std::remove(json.c_str());
  return s;
}

uint64_t Sum(const nlohmann::json& counts) {
  uint64_t n = 0;
  for (const auto& [k, v] : counts.items()) n += v.get<uint64_t>();
  return n;
}

TEST(Soak, ShmAndTcpUnderChaosKeepEveryByteAndAnswerEveryFault) {
  const bool root = geteuid() == 0;
  Soak s = RunSoak(std::string("--transports shm,tcp --seconds 40 --peers 3 --threads 2 --chaos-interval 1.5 "
                               "--progress 10") + (root ? " --netns" : ""));
  ASSERT_FALSE(s.report.is_discarded()) << s.run.output;
  ASSERT_TRUE(s.report.contains("phases")) << s.run.output;
  EXPECT_EQ(s.run.exit_code, 0) << s.run.output;
  EXPECT_TRUE(s.report["ok"].get<bool>()) << s.run.output;
  ASSERT_EQ(s.report["phases"].size(), 2u) << s.run.output;
  for (const auto& p : s.report["phases"]) {
    const std::string t = p["transport"];
    EXPECT_EQ(p["setup_error"], "") << t << ": " << s.run.output;
    EXPECT_GT(p["ops"]["copy"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    EXPECT_GT(p["ops"]["batch"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    EXPECT_GT(p["ops"]["async"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    EXPECT_GT(p["bytes"].get<uint64_t>(), 0u) << t;
    EXPECT_EQ(p["mismatches"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    EXPECT_EQ(p["hangs"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    // Kills and freezes everywhere; link cuts where the peers have links of their own.
    const auto& f = p["faults"];
    EXPECT_GT(f["injected"]["kill+restart"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    EXPECT_GT(f["injected"]["freeze"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    const bool cut = t == "tcp" && p["where"].get<std::string>().find("network namespaces") != std::string::npos;
    if (cut) {
      EXPECT_GT(f["injected"]["link-down"].get<uint64_t>(), 0u) << s.run.output;
    }
    EXPECT_EQ(Sum(f["answered"]), Sum(f["injected"])) << t << ": " << s.run.output;
    EXPECT_EQ(f["unanswered"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    EXPECT_EQ(f["crashes"].get<uint64_t>(), 0u) << t << ": " << s.run.output;
    // An op that failed failed with a code that names a peer's fate, never a bug's.
    for (const auto& [code, n] : p["errors"].items())
      EXPECT_TRUE(code == "PEER_DOWN" || code == "TIMEOUT" || code == "UNAVAILABLE" || code == "CANCELLED")
          << t << ": " << n << " ops failed with " << code << "\n" << s.run.output;
  }
  EXPECT_NE(s.run.output.find("weft soak: PASSED"), std::string::npos) << s.run.output;
  if (root) {
    // The soak removes the namespaces it made (ws<pid>br, ws<pid>h<k>).
    CommandRun left = Shell("ip netns list | grep -E '^ws[0-9]+(br|h[0-9]+)' || true");
    EXPECT_EQ(left.output, "") << left.output;
  }
}

TEST(Soak, ACorruptedByteIsAMismatchAndFailsTheRun) {
  Soak s = RunSoak("--transports shm --seconds 6 --peers 2 --threads 1 --chaos-interval 0 --inject-defect mismatch");
  ASSERT_FALSE(s.report.is_discarded()) << s.run.output;
  EXPECT_EQ(s.run.exit_code, 1) << s.run.output;
  EXPECT_FALSE(s.report["ok"].get<bool>()) << s.run.output;
  ASSERT_EQ(s.report["phases"].size(), 1u) << s.run.output;
  EXPECT_EQ(s.report["phases"][0]["mismatches"].get<uint64_t>(), 1u) << s.run.output;
  EXPECT_EQ(s.report["phases"][0]["hangs"].get<uint64_t>(), 0u) << s.run.output;
  EXPECT_NE(s.run.output.find("MISMATCH: slot 0 thread 0"), std::string::npos) << s.run.output;
  EXPECT_NE(s.run.output.find("weft soak: FAILED"), std::string::npos) << s.run.output;
}

TEST(Soak, AnOpPastItsDeadlineIsAHangAndFailsTheRun) {
  Soak s = RunSoak("--transports shm --seconds 6 --peers 2 --threads 1 --chaos-interval 0 --deadline-ms 1000 "
                   "--hang-margin-ms 1000 --inject-defect hang");
  ASSERT_FALSE(s.report.is_discarded()) << s.run.output;
  EXPECT_EQ(s.run.exit_code, 1) << s.run.output;
  ASSERT_EQ(s.report["phases"].size(), 1u) << s.run.output;
  EXPECT_EQ(s.report["phases"][0]["hangs"].get<uint64_t>(), 1u) << s.run.output;
  EXPECT_EQ(s.report["phases"][0]["mismatches"].get<uint64_t>(), 0u) << s.run.output;
  EXPECT_NE(s.run.output.find("HANG: peer 0 (rank"), std::string::npos) << s.run.output;
  EXPECT_NE(s.run.output.find("has been copying for"), std::string::npos) << s.run.output;
}

TEST(Soak, BadOptionsAreRefusedWithStatus2) {
  EXPECT_EQ(Shell(std::string(WEFT_BINARY) + " soak --transports shm,rdma --seconds 1").exit_code, 2);
  EXPECT_EQ(Shell(std::string(WEFT_BINARY) + " soak --max-op 1 --seconds 1").exit_code, 2);
}

}  // namespace
