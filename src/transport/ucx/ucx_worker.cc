#include "transport/ucx/ucx_worker.h"

#include <sys/epoll.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "base/log.h"

namespace weft::transport::ucx {

namespace {

// The overrides of UCX's environment for this context.
Status ApplyOptions(const UcpLibrary& lib, ucp_config_t* config, const UcxOptions& options) {
  for (const auto& [name, value] : {std::pair{"TLS", options.tls}, std::pair{"NET_DEVICES", options.net_devices}}) {
    if (value.empty()) continue;
    ucs_status_t s = lib.config_modify(config, name, value.c_str());
    if (s != UCS_OK)
      return Error(Code::kInvalidArgument, "ucx: UCX_{}={} is refused: {}", name, value, lib.Describe(s));
  }
  return OkStatus();
}

// ucp_context_print_info's text (UCX has no query for its resources).
std::string PrintInfo(const UcpLibrary& lib, ucp_context_h context) {
  char* text = nullptr;
  size_t size = 0;
  FILE* f = ::open_memstream(&text, &size);
  if (!f) return "";
  lib.context_print_info(context, f);
  std::fclose(f);
  std::string out(text, size);
  std::free(text);
  return out;
}

}  // namespace

std::string RdmaResources(std::string_view print_info) {
  // Lines such as "#      resource 7  :  md 5  dev 4  flags -- rc_mlx5/mlx5_0:1".
  std::string out;
  size_t pos = 0;
  while (pos < print_info.size()) {
    size_t end = std::min(print_info.find('\n', pos), print_info.size());
    std::string_view line = print_info.substr(pos, end - pos);
    pos = end + 1;
    if (line.find("resource") == std::string_view::npos) continue;
    size_t at = line.rfind(' ');
    if (at == std::string_view::npos) continue;
    std::string_view name = line.substr(at + 1);  // "tl/device"
    for (std::string_view rdma : {"rc", "dc", "ud", "srd"}) {
      if (name.substr(0, rdma.size()) == rdma && name.size() > rdma.size() &&
          (name[rdma.size()] == '_' || name[rdma.size()] == '/')) {
        out += (out.empty() ? "" : ", ") + std::string(name);
        break;
      }
    }
  }
  return out;
}

Result<std::shared_ptr<UcxTransport::Worker>> UcxTransport::Worker::Create(std::shared_ptr<const UcpLibrary> lib,
                                                                           const UcxOptions& options) {
  auto w = std::make_shared<Worker>();
  w->lib = std::move(lib);
  const UcpLibrary& ucp = *w->lib;
  ucp_config_t* config = nullptr;
  if (ucs_status_t s = ucp.config_read(nullptr, nullptr, &config); s != UCS_OK)
    return Error(Code::kIo, "ucx: reading UCX's configuration: {}", ucp.Describe(s));
  Status applied = ApplyOptions(ucp, config, options);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  ucs_status_t s = applied.ok() ? ucp.init_version(UCP_API_MAJOR, UCP_API_MINOR, &params, config, &w->context)
                                : UCS_ERR_INVALID_PARAM;
  ucp.config_release(config);
  WEFT_RETURN_IF_ERROR(applied);
  if (s != UCS_OK) return Error(Code::kIo, "ucx: ucp_init: {}", ucp.Describe(s));

  // Which memory this UCX moves: a build with CUDA whose cuda modules loaded (a driver is here)
  // lists CUDA; Debian's, or any on a machine without a GPU driver, does not.
  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp.context_query(w->context, &attr) == UCS_OK)
    w->cuda_memory = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  w->rdma_resources = RdmaResources(PrintInfo(ucp, w->context));

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // our mutex serialises every call
  if ((s = ucp.worker_create(w->context, &wp, &w->worker)) != UCS_OK)
    return Error(Code::kIo, "ucx: ucp_worker_create: {}", ucp.Describe(s));
  ucp_address_t* address = nullptr;
  size_t length = 0;
  if ((s = ucp.worker_get_address(w->worker, &address, &length)) != UCS_OK)
    return Error(Code::kIo, "ucx: ucp_worker_get_address: {}", ucp.Describe(s));
  w->address.assign(reinterpret_cast<const char*>(address), length);
  ucp.worker_release_address(w->worker, address);
  WEFT_RETURN_IF_ERROR(w->StartProgressThread());
  return w;
}

Status UcxTransport::Worker::StartProgressThread() {
  int efd = -1;
  if (ucs_status_t s = lib->worker_get_efd(worker, &efd); s != UCS_OK)
    return Error(Code::kIo, "ucx: ucp_worker_get_efd: {}", lib->Describe(s));
  WEFT_ASSIGN_OR_RETURN(loop, net::EventLoop::Create());
  WEFT_RETURN_IF_ERROR(loop->Add(efd, EPOLLIN, [this](int, uint32_t) { ProgressAWhile(); }));
  // A safety tick: an event consumed by another thread's progress between its last arm and ours
  // is picked up within this time instead of waiting for the next one.
  loop->SetTick([this] {
    if (std::unique_lock lock(mu, std::try_to_lock); lock.owns_lock()) DrainAndArm();
    return std::chrono::milliseconds(50);
  });
  {
    std::lock_guard lock(mu);
    DrainAndArm();
  }
  progress_thread = std::thread([this] {
    if (Status s = loop->Run(); !s.ok()) WEFT_LOG_ERROR("ucx progress thread: {}", s.ToString());
  });
  return OkStatus();
}

void UcxTransport::Worker::ProgressAWhile() {
  // An event usually has followers (the rest of a put, the flush that completes it): polling a
  // short window answers them without another wake-up through the event fd. The mutex is taken
  // per poll, so the transport's own callers are not shut out meanwhile.
  constexpr auto kWindow = std::chrono::microseconds(50);
  auto until = std::chrono::steady_clock::now() + kWindow;
  while (std::chrono::steady_clock::now() < until) {
    std::lock_guard lock(mu);
    if (lib->worker_progress(worker) != 0) until = std::chrono::steady_clock::now() + kWindow;
  }
  std::lock_guard lock(mu);
  DrainAndArm();
}

void UcxTransport::Worker::DrainAndArm() {
  for (;;) {
    while (lib->worker_progress(worker) != 0) {
    }
    ucs_status_t s = lib->worker_arm(worker);
    if (s != UCS_ERR_BUSY) return;  // armed (or an error the next progress reports)
  }
}

Status UcxTransport::Worker::Failed(ucs_status_t status, std::string_view what) const {
  switch (status) {
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_CANCELED:
    // An endpoint whose peer was killed mid-op: its flush may fail with this instead of a reset
    // (~1 in 4 kills in NetnsTransTest). As IO the transfer engine did not look the peer up again.
    case UCS_ERR_NOT_CONNECTED:
      return Error(Code::kPeerDown, "ucx: {}: {}", what, lib->Describe(status));
    case UCS_ERR_TIMED_OUT:
      return Error(Code::kTimeout, "ucx: {}: {}", what, lib->Describe(status));
    default:
      return Error(Code::kIo, "ucx: {}: {}", what, lib->Describe(status));
  }
}

UcxTransport::Worker::~Worker() {
  if (loop) loop->Stop();
  if (progress_thread.joinable()) progress_thread.join();
  loop.reset();
  if (worker) lib->worker_destroy(worker);
  if (context) lib->cleanup(context);
}

}  // namespace weft::transport::ucx
