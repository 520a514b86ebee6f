// The subcommands of the `weft` CLI. Each registers its options on the app and returns the
// exit status through the function it sets.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace weft::tools {

using Runner = std::function<int()>;

// Each adds a subcommand and sets *run when it is chosen.
void AddDemo(CLI::App& app, Runner* run);
void AddMeta(CLI::App& app, Runner* run);
void AddStoreMaster(CLI::App& app, Runner* run);  // meta_cmd.cc: the coordinator as the store's master
void AddRoute(CLI::App& app, Runner* run);
void AddStatus(CLI::App& app, Runner* run);  // status_cmd.cc: a pool's live view from its coordinator
void AddConfig(CLI::App& app, Runner* run);
void AddBench(CLI::App& app, Runner* run);
void AddBenchGpu(CLI::App& app, Runner* run);  // bench_gpu_cmd.cc: device paths vs raw CUDA
// The device-path benchmark itself (`weft bench-gpu`; `weft bench` runs it too where a GPU is).
int RunDeviceBench(const std::string& json_path, int reps, bool quick);
void AddBenchTcp(CLI::App& app, Runner* run);  // bench_tcp_cmd.cc: TCP data plane vs raw sockets
void AddTrans(CLI::App& app, Runner* run);     // trans_cmd.cc: trans-serve and bench-trans
void AddBenchUcx(CLI::App& app, Runner* run);  // bench_ucx_cmd.cc: weft over ucx vs ucx_perftest and tcp
void AddBenchStore(CLI::App& app, Runner* run);  // bench_store_cmd.cc: the C++ store API vs memcpy
void AddBenchColl(CLI::App& app, Runner* run);   // bench_coll_cmd.cc: symm collectives vs gloo
void AddBenchCoordinator(CLI::App& app, Runner* run);  // bench_coord_cmd.cc: the coordinator under many peers
void AddSoak(CLI::App& app, Runner* run);        // soak_cmd.cc: verified copies under chaos

}  // namespace weft::tools
