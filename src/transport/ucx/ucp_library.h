// The UCP functions the ucx transport calls, resolved at run time from the UCX library of this
// machine (dlopen), never linked: a build has UCX's headers only (Debian libucx-dev), and one
// binary or Python wheel runs with whichever UCX a cluster has (its own HPC-X / MOFED build with
// InfiniBand and CUDA, PyPI's libucx-cu13, Debian's), or without any (the transport is then
// absent and says why).
//
// Where it is looked for: WEFT_UCX_LIBRARY (a path to libucp.so, or a name the dynamic loader
// resolves) and only there when it is set; else libucp.so.0 through the dynamic loader's search
// (LD_LIBRARY_PATH, the cache, RUNPATH).
// libucp loads its own libucs/libuct and transport modules from where it lies.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "base/result.h"

namespace weft::transport::ucx {

struct UcpLibrary {
  std::string path;     // what was opened ("libucp.so.0", or the override)
  std::string version;  // "1.13.1", from the library itself
  void* handle = nullptr;

  decltype(&ucp_get_version_string) get_version_string = nullptr;
  decltype(&ucp_config_read) config_read = nullptr;
  decltype(&ucp_config_release) config_release = nullptr;
  decltype(&ucp_config_modify) config_modify = nullptr;
  decltype(&ucp_init_version) init_version = nullptr;
  decltype(&ucp_cleanup) cleanup = nullptr;
  decltype(&ucp_context_query) context_query = nullptr;
  decltype(&ucp_context_print_info) context_print_info = nullptr;
  decltype(&ucp_worker_create) worker_create = nullptr;
  decltype(&ucp_worker_destroy) worker_destroy = nullptr;
  decltype(&ucp_worker_get_address) worker_get_address = nullptr;
  decltype(&ucp_worker_release_address) worker_release_address = nullptr;
  decltype(&ucp_worker_progress) worker_progress = nullptr;
  decltype(&ucp_worker_get_efd) worker_get_efd = nullptr;
  decltype(&ucp_worker_arm) worker_arm = nullptr;
  decltype(&ucp_ep_create) ep_create = nullptr;
  decltype(&ucp_ep_close_nbx) ep_close_nbx = nullptr;
  decltype(&ucp_ep_flush_nbx) ep_flush_nbx = nullptr;
  decltype(&ucp_mem_map) mem_map = nullptr;
  decltype(&ucp_mem_unmap) mem_unmap = nullptr;
  decltype(&ucp_rkey_pack) rkey_pack = nullptr;
  decltype(&ucp_rkey_buffer_release) rkey_buffer_release = nullptr;
  decltype(&ucp_ep_rkey_unpack) ep_rkey_unpack = nullptr;
  decltype(&ucp_rkey_destroy) rkey_destroy = nullptr;
  decltype(&ucp_put_nbx) put_nbx = nullptr;
  decltype(&ucp_get_nbx) get_nbx = nullptr;
  decltype(&ucp_request_check_status) request_check_status = nullptr;
  decltype(&ucp_request_free) request_free = nullptr;
  decltype(&ucs_status_string) status_string = nullptr;

  // NOT_SUPPORTED naming every place tried and why (the loader's own message) when none loads or
  // a function is missing (a UCX older than this build's headers need).
  static Result<std::shared_ptr<const UcpLibrary>> Load();
  ~UcpLibrary();

  // "UCS_ERR_...: <UCX's message>" for a status.
  std::string Describe(ucs_status_t status) const;
};

}  // namespace weft::transport::ucx
