// Output of `weft bench`: machine info, the table, the JSON file and the PNG plot.
#include "tools/weft/bench_report.h"

#include <sched.h>
#include <spawn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include <weft/config.h>

extern char** environ;

#ifndef WEFT_VERSION
// CMake's project(weft VERSION ...); the build does not pass it down as a definition yet.
#define WEFT_VERSION "0.1.0"
#endif

namespace weft::tools::bench {
namespace {

std::string Trim(std::string s) {
  const char* space = " \t\r\n";
  s.erase(0, s.find_first_not_of(space) == std::string::npos ? s.size() : s.find_first_not_of(space));
  s.erase(s.find_last_not_of(space) + 1);
  return s;
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return Trim(line);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  // x86 says "model name"; some ARM kernels only say "Hardware" or "CPU part".
  std::string fallback;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = Trim(line.substr(0, colon));
    std::string value = Trim(line.substr(colon + 1));
    if (key == "model name" && !value.empty()) return value;
    if ((key == "Hardware" || key == "cpu model" || key == "CPU part") && fallback.empty()) fallback = value;
  }
  return fallback.empty() ? "unknown" : fallback;
}

std::string Quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_of(" \t\n'\"\\$`*?;&|<>()") == std::string::npos) return arg;
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The plotting script: $WEFT_PLOT_SCRIPT, next to the binary's tree (build/weft ->
// scripts/plot_bench.py), an installed share/weft copy, or scripts/ under the current directory.
std::string FindPlotScript() {
  if (const char* env = std::getenv("WEFT_PLOT_SCRIPT"); env && *env) return env;
  std::vector<std::string> candidates;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    std::string dir(exe);
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(dir + "/../scripts/plot_bench.py");
    candidates.push_back(dir + "/../share/weft/plot_bench.py");
  }
  candidates.push_back("scripts/plot_bench.py");
  for (const auto& c : candidates)
    if (access(c.c_str(), R_OK) == 0) return c;
  return "";
}

std::string Gbps(double v) { return v > 0 ? fmt::format("{:.2f}", v) : "-"; }

}  // namespace

std::string FormatNanos(double ns) {
  if (ns < 10'000) return fmt::format("{:.0f} ns", ns);
  if (ns < 10'000'000) return fmt::format("{:.1f} us", ns / 1e3);
  return fmt::format("{:.2f} ms", ns / 1e6);
}

MachineInfo ReadMachineInfo() {
  MachineInfo m;
  m.cpu_model = CpuModel();
  cpu_set_t set;
  CPU_ZERO(&set);
  m.online_cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  m.nproc = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : m.online_cpus;
  struct utsname u {};
  if (uname(&u) == 0) {
    m.kernel = fmt::format("{} {} {} {}", u.sysname, u.release, u.version, u.machine);
    m.hostname = u.nodename;
  }
  m.memory_bytes = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  m.numa_nodes = ReadFirstLine("/sys/devices/system/node/online");
  m.thp = ReadFirstLine("/sys/kernel/mm/transparent_hugepage/enabled");
  m.thp_shmem = ReadFirstLine("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  if (getloadavg(m.load_before, 3) != 3) m.load_before[0] = m.load_before[1] = m.load_before[2] = -1;
  m.weft_version = WEFT_VERSION;
  std::ifstream cmd("/proc/self/cmdline", std::ios::binary);
  std::string arg;
  while (std::getline(cmd, arg, '\0')) m.argv.push_back(arg);
  for (size_t i = 0; i < m.argv.size(); ++i) m.command_line += (i ? " " : "") + Quote(m.argv[i]);
  std::time_t now = std::time(nullptr);
  std::tm tm {};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  m.started_utc = buf;
  return m;
}

void PrintHeader(const MachineInfo& m, const Settings& s) {
  fmt::print("weft bench {}: {}, {} CPUs (nproc), {}, load {:.2f} {:.2f} {:.2f}\n", m.weft_version, m.cpu_model,
             m.nproc, m.kernel, m.load_before[0], m.load_before[1], m.load_before[2]);
  fmt::print("pool: 2 peers (this process + one peer process) x {}; engine split_bytes {}\n",
             FormatBytes(s.pool_size), FormatBytes(s.split_bytes));
  fmt::print("baseline: {}\n", s.baseline);
  fmt::print("timing: {}; latency: {} timed single copies per block <= {} (p50/p99, clock reads of ~{:.0f} ns "
             "included)\n",
             s.statistic, s.latency_iters, FormatBytes(s.latency_max_block), s.timer_overhead_ns);
  std::fflush(stdout);
}

void PrintTable(const std::vector<Row>& rows, const Settings& s) {
  fmt::print("\n{:<8} {:>8} {:>5} {:>7} {:>10} {:>11} {:>6} {:>10} {:>10} {:>10} {:>10}  {}\n", "dir", "block",
             "batch", "threads", "weft GB/s", "memcpy GB/s", "ratio", "weft p50", "weft p99", "memcpy p50",
             "memcpy p99", "path");
  fmt::print("{}\n", std::string(112, '-'));
  for (const Row& r : rows) {
    std::string lat[4] = {"-", "-", "-", "-"};
    if (r.latency) {
      lat[0] = FormatNanos(r.latency->weft_p50_ns);
      lat[1] = FormatNanos(r.latency->weft_p99_ns);
      lat[2] = FormatNanos(r.latency->memcpy_p50_ns);
      lat[3] = FormatNanos(r.latency->memcpy_p99_ns);
    }
    fmt::print("{:<8} {:>8} {:>5} {:>7} {:>10} {:>11} {:>6.2f} {:>10} {:>10} {:>10} {:>10}  {}\n", r.label,
               FormatBytes(r.block), r.batch, r.threads, Gbps(r.weft_gbps), Gbps(r.memcpy_gbps), r.ratio, lat[0],
               lat[1], lat[2], lat[3], r.path);
  }
  fmt::print("\nGB/s = 1e9 bytes/s, {}. ratio = median over the repetitions of weft / memcpy, each pair timed back "
             "to back.\n",
             s.statistic);
  fmt::print("LH->GH and GH->LH: GH is the other peer's slice (path shm); GH->GH: other peer's slice -> own "
             "slice; LH->LH: two local buffers.\n");
  // The goal the issue set: shm directions at 64 MiB within 0.9x of memcpy with the same threads.
  for (const Row& r : rows)
    if (r.block == (64ull << 20) && r.batch == 1 && (r.direction == "LH2GH" || r.direction == "GH2LH"))
      fmt::print("goal check: {} 64MiB threads {}: {:.2f}x memcpy ({})\n", r.label, r.threads, r.ratio,
                 r.ratio >= 0.9 ? "meets >= 0.9x" : "BELOW 0.9x");
  std::fflush(stdout);
}

nlohmann::json RunJson(std::string_view tool, const MachineInfo& m) {
  nlohmann::json doc;
  doc["tool"] = tool;
  doc["weft_version"] = m.weft_version;
  doc["command"] = m.command_line;
  doc["argv"] = m.argv;
  doc["started_utc"] = m.started_utc;
  doc["machine"] = {{"cpu_model", m.cpu_model},
                    {"nproc", m.nproc},
                    {"online_cpus", m.online_cpus},
                    {"kernel", m.kernel},
                    {"hostname", m.hostname},
                    {"memory_bytes", m.memory_bytes},
                    {"numa_nodes", m.numa_nodes},
                    {"transparent_hugepage", m.thp},
                    {"transparent_hugepage_shmem", m.thp_shmem},
                    {"load_average_at_start", {m.load_before[0], m.load_before[1], m.load_before[2]}}};
  return doc;
}

nlohmann::json ToJson(const MachineInfo& m, const Settings& s, const std::vector<Row>& rows) {
  using nlohmann::json;
  json doc = RunJson("weft bench", m);
  doc["machine"]["gpu"] = "none used (host paths only)";
  doc["settings"] = {{"blocks", s.blocks},
                     {"batches", s.batches},
                     {"threads", s.threads},
                     {"directions", s.directions},
                     {"pool_size_per_peer", s.pool_size},
                     {"buffer_capacity", s.capacity},
                     {"split_bytes", s.split_bytes},
                     {"repetitions", s.reps},
                     {"min_time_ms_per_repetition", s.min_time_ms},
                     {"latency_iterations", s.latency_iters},
                     {"latency_max_block", s.latency_max_block},
                     {"timer_overhead_ns", s.timer_overhead_ns},
                     {"quick", s.quick},
                     {"statistic", s.statistic},
                     {"baseline", s.baseline},
                     {"gbps", "1e9 bytes per second"}};
  json out = json::array();
  for (const Row& r : rows) {
    json j = {{"direction", r.direction},
              {"label", r.label},
              {"ends", r.ends},
              {"path", r.path},
              {"block", r.block},
              {"batch", r.batch},
              {"threads", r.threads},
              {"bytes_per_submission", r.block * r.batch},
              {"weft_gbps", r.weft_gbps},
              {"weft_gbps_best", r.weft_gbps_best},
              {"memcpy_gbps", r.memcpy_gbps},
              {"memcpy_gbps_best", r.memcpy_gbps_best},
              {"ratio", r.ratio},
              {"ratio_of_medians", r.ratio_of_medians},
              {"weft_reps_gbps", r.weft_reps},
              {"memcpy_reps_gbps", r.memcpy_reps},
              {"weft_iters_per_rep", r.weft_iters},
              {"memcpy_iters_per_rep", r.memcpy_iters},
              {"verified", true}};
    if (r.latency) {
      j["latency"] = {{"samples", r.latency->samples},
                      {"weft_p50_ns", r.latency->weft_p50_ns},
                      {"weft_p99_ns", r.latency->weft_p99_ns},
                      {"memcpy_p50_ns", r.latency->memcpy_p50_ns},
                      {"memcpy_p99_ns", r.latency->memcpy_p99_ns}};
    } else {
      j["latency"] = nullptr;
    }
    out.push_back(std::move(j));
  }
  doc["rows"] = std::move(out);
  return doc;
}

Status WriteJson(const std::string& path, const nlohmann::json& doc) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return ErrnoStatus("opening " + tmp, errno);
    out << doc.dump(2) << "\n";
    if (!out.flush()) return ErrnoStatus("writing " + tmp, errno);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("renaming " + tmp + " to " + path, errno);
  return OkStatus();
}

bool MakePng(const std::string& json_path, const std::string& png_path) {
  const std::string script = FindPlotScript();
  if (script.empty()) {
    fmt::print(stderr,
               "weft bench: no PNG: scripts/plot_bench.py was not found (run from the source tree or set "
               "WEFT_PLOT_SCRIPT); the table and JSON are complete\n");
    return false;
  }
  std::vector<std::string> args = {"python3", script, json_path, png_path};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "python3", nullptr, nullptr, argv.data(), environ);
  int status = 0;
  if (rc == 0 && pid > 0) {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  const int code = rc != 0 ? 127 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128);
  if (code == 0) {
    fmt::print("weft bench: plot written to {}\n", png_path);
    return true;
  }
  if (code == 127) {
    fmt::print(stderr, "weft bench: no PNG: python3 was not found. Install it with `make deps` (or apt-get install "
                       "python3 python3-pip && pip install matplotlib); the table and JSON are complete\n");
  } else if (code == 3) {
    fmt::print(stderr, "weft bench: no PNG: matplotlib is missing. Install it with `make deps` (or python3 -m pip "
                       "install matplotlib); the table and JSON are complete\n");
  } else {
    fmt::print(stderr, "weft bench: no PNG: {} {} {} exited with status {}; the table and JSON are complete\n",
               script, json_path, png_path, code);
  }
  return false;
}

}  // namespace weft::tools::bench
