// The UCP context and worker of one ucx transport, and the thread that progresses it. Every
// call into the worker (and into endpoints, rkeys and memory handles made from it) is made with
// `mu` held; whoever progresses last re-arms the worker's event fd before letting go, so the
// progress thread wakes for the next event (a target's side of software RMA runs there).
#pragma once

#include <atomic>
#include <map>
#include <string_view>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/result.h"
#include "net/event_loop.h"
#include "transport/ucx/ucp_library.h"
#include "transport/ucx/ucx_transport.h"

namespace weft::transport::ucx {

// The RDMA resources ("rc_mlx5/mlx5_0:1") named in ucp_context_print_info's text, comma-separated.
std::string RdmaResources(std::string_view print_info);

struct UcxTransport::Worker {
  std::shared_ptr<const UcpLibrary> lib;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::string address;  // this worker's packed address
  bool cuda_memory = false;  // the context registers and moves CUDA memory (ucp_context_query)
  // The RDMA transports (rc, dc, ud, srd) among the context's resources, "rc_mlx5/mlx5_0:1, ..."; empty: none
  // (then UCX reaches other nodes over its tcp, which the cost model ranks below weft's own tcp).
  std::string rdma_resources;
  std::mutex mu;
  std::map<uint64_t, ucp_mem_h> exported;  // region id -> its registration (under mu)
  // What the metrics publish (UcxTransport's scrape hook): atomics, so that a scrape never waits
  // for mu, which a caller holds while it progresses towards its deadline.
  struct Stats {
    std::atomic<int64_t> endpoints_open{0};
    std::atomic<int64_t> regions_exported{0};
    std::atomic<int64_t> posts_waiting{0};  // Post calls waiting for mu or progressing under it
    std::atomic<uint64_t> endpoints_created{0};
    std::atomic<uint64_t> endpoint_failures{0};  // reported by UCX's error callback
    std::atomic<uint64_t> ops[2]{};              // completed, by RemoteOpKind: [0] read, [1] write
    std::atomic<uint64_t> bytes[2]{};
    std::atomic<uint64_t> ops_failed{0};
  } stats;
  std::unique_ptr<net::EventLoop> loop;
  std::thread progress_thread;

  static Result<std::shared_ptr<Worker>> Create(std::shared_ptr<const UcpLibrary> lib, const UcxOptions& options);
  ~Worker();  // stops the progress thread, then destroys the worker and the context

  // mu held: progresses until the worker has nothing more to do, then arms its event fd.
  void DrainAndArm();
  // The progress thread's answer to an event (takes mu itself): polls for a short window, then
  // drains and arms.
  void ProgressAWhile();
  // An error of UCX as a weft status: a peer's failure is PEER_DOWN, the rest IO, naming `what`.
  Status Failed(ucs_status_t status, std::string_view what) const;

 private:
  Status StartProgressThread();
};

}  // namespace weft::transport::ucx
