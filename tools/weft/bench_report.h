// `weft bench` results and how they are shown: the rows the measurement produces, the machine
// they were taken on, the table on stdout, the JSON file and the PNG plot (through
// scripts/plot_bench.py). The measurement itself is in bench_cmd.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace weft::tools::bench {

// Copy latency of one block size: percentiles over many timed single copies.
struct Latency {
  uint64_t samples = 0;
  double weft_p50_ns = 0, weft_p99_ns = 0;
  double memcpy_p50_ns = 0, memcpy_p99_ns = 0;
};

// One measured case: a direction, block size, batch size and thread count.
struct Row {
  std::string direction;  // engine name: "LH2GH", "GH2LH", "GH2GH", "LH2LH"
  std::string label;      // "LH->GH"
  std::string ends;       // what the two ends are, in words
  std::string path;       // the transport the engine chose ("shm", "local")
  uint64_t block = 0;     // bytes per copy
  uint64_t batch = 1;     // copies per submission (1: Copy, more: CopyBatch)
  uint32_t threads = 0;   // copy_threads of the engine; participants of the baseline
  double weft_gbps = 0, weft_gbps_best = 0;      // median and best of the repetitions
  double memcpy_gbps = 0, memcpy_gbps_best = 0;
  double ratio = 0;             // median over repetitions of weft rep i / memcpy rep i (back to back)
  double ratio_of_medians = 0;  // weft_gbps / memcpy_gbps
  std::vector<double> weft_reps, memcpy_reps;  // GB/s of every repetition
  uint64_t weft_iters = 0, memcpy_iters = 0;   // submissions timed per repetition
  std::optional<Latency> latency;              // batch 1 and block <= the latency limit only
};

// How the run was made (goes into the JSON and the table header).
struct Settings {
  std::vector<uint64_t> blocks;
  std::vector<uint64_t> batches;
  std::vector<uint32_t> threads;
  std::vector<std::string> directions;
  uint64_t pool_size = 0;    // rank_size of each peer
  uint64_t capacity = 0;     // bytes of each buffer and pool region used
  uint64_t split_bytes = 0;  // the engine splits copies at least this large
  int reps = 0;
  double min_time_ms = 0;
  uint64_t latency_iters = 0;
  uint64_t latency_max_block = 0;
  bool quick = false;
  double timer_overhead_ns = 0;  // median cost of one clock read pair, included in latencies
  std::string statistic;         // how the repetitions are summarised
  std::string baseline;          // what the memcpy baseline is
};

struct MachineInfo {
  std::string cpu_model;
  int nproc = 0;        // CPUs this process may run on (as `nproc`)
  int online_cpus = 0;  // CPUs online
  std::string kernel;   // uname: sysname release version machine
  std::string hostname;
  uint64_t memory_bytes = 0;
  std::string numa_nodes;  // /sys/devices/system/node/online
  std::string thp;         // /sys/kernel/mm/transparent_hugepage/enabled
  std::string thp_shmem;   // .../shmem_enabled
  double load_before[3] = {0, 0, 0};  // load averages when the bench started
  std::string weft_version;
  std::string command_line;
  std::vector<std::string> argv;
  std::string started_utc;
};

MachineInfo ReadMachineInfo();

void PrintHeader(const MachineInfo& machine, const Settings& settings);
void PrintTable(const std::vector<Row>& rows, const Settings& settings);

nlohmann::json ToJson(const MachineInfo& machine, const Settings& settings, const std::vector<Row>& rows);
// The fields every benchmark's JSON starts with: the tool, weft's version, the command line,
// the start time and the machine (doc["machine"] takes a tool's own fields after).
nlohmann::json RunJson(std::string_view tool, const MachineInfo& machine);
Status WriteJson(const std::string& path, const nlohmann::json& doc);

// Runs `python3 scripts/plot_bench.py JSON PNG`. A missing python3, matplotlib or script is
// reported with how to install it and is not an error of the bench (returns false, prints why).
bool MakePng(const std::string& json_path, const std::string& png_path);

// "312 ns", "12.4 us", "3.10 ms".
std::string FormatNanos(double ns);

}  // namespace weft::tools::bench
