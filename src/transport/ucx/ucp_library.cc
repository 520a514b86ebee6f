#include "transport/ucx/ucp_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <vector>

namespace weft::transport::ucx {

namespace {

// Resolves one symbol into `fn`; false (with the name appended to `missing`) when absent.
template <typename Fn>
void Resolve(void* handle, const char* name, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(dlsym(handle, name));
  if (!fn) missing += (missing.empty() ? "" : ", ") + std::string(name);
}

// An explicit WEFT_UCX_LIBRARY is the only place tried: asking for one UCX never silently
// gets another.
std::vector<std::string> Candidates() {
  if (const char* env = std::getenv("WEFT_UCX_LIBRARY"); env && *env) return {env};
  return {"libucp.so.0"};
}

}  // namespace

Result<std::shared_ptr<const UcpLibrary>> UcpLibrary::Load() {
  std::string tried;
  for (const std::string& path : Candidates()) {
    // RTLD_LOCAL: UCX's symbols stay out of the global namespace (a second UCX in the process,
    // say torch's, is not disturbed); dlsym on the handle still finds libucs's through it.
    // RTLD_NODELETE: UCX is never unloaded. Its memory hooks (libucm) patch mmap and friends for
    // the whole process and its async thread outlives the last context; unloading it left the
    // process calling into unmapped code at exit.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!handle) {
      const char* why = dlerror();
      tried += fmt::format("{}{}: {}", tried.empty() ? "" : "; ", path, why ? why : "not found");
      continue;
    }
    auto lib = std::make_shared<UcpLibrary>();
    lib->path = path;
    lib->handle = handle;
    std::string missing;
    Resolve(handle, "ucp_get_version_string", lib->get_version_string, missing);
    Resolve(handle, "ucp_config_read", lib->config_read, missing);
    Resolve(handle, "ucp_config_release", lib->config_release, missing);
    Resolve(handle, "ucp_config_modify", lib->config_modify, missing);
    Resolve(handle, "ucp_init_version", lib->init_version, missing);
    Resolve(handle, "ucp_cleanup", lib->cleanup, missing);
    Resolve(handle, "ucp_context_query", lib->context_query, missing);
    Resolve(handle, "ucp_context_print_info", lib->context_print_info, missing);
    Resolve(handle, "ucp_worker_create", lib->worker_create, missing);
    Resolve(handle, "ucp_worker_destroy", lib->worker_destroy, missing);
    Resolve(handle, "ucp_worker_get_address", lib->worker_get_address, missing);
    Resolve(handle, "ucp_worker_release_address", lib->worker_release_address, missing);
    Resolve(handle, "ucp_worker_progress", lib->worker_progress, missing);
    Resolve(handle, "ucp_worker_get_efd", lib->worker_get_efd, missing);
    Resolve(handle, "ucp_worker_arm", lib->worker_arm, missing);
    Resolve(handle, "ucp_ep_create", lib->ep_create, missing);
    Resolve(handle, "ucp_ep_close_nbx", lib->ep_close_nbx, missing);
    Resolve(handle, "ucp_ep_flush_nbx", lib->ep_flush_nbx, missing);
    Resolve(handle, "ucp_mem_map", lib->mem_map, missing);
    Resolve(handle, "ucp_mem_unmap", lib->mem_unmap, missing);
    Resolve(handle, "ucp_rkey_pack", lib->rkey_pack, missing);
    Resolve(handle, "ucp_rkey_buffer_release", lib->rkey_buffer_release, missing);
    Resolve(handle, "ucp_ep_rkey_unpack", lib->ep_rkey_unpack, missing);
    Resolve(handle, "ucp_rkey_destroy", lib->rkey_destroy, missing);
    Resolve(handle, "ucp_put_nbx", lib->put_nbx, missing);
    Resolve(handle, "ucp_get_nbx", lib->get_nbx, missing);
    Resolve(handle, "ucp_request_check_status", lib->request_check_status, missing);
    Resolve(handle, "ucp_request_free", lib->request_free, missing);
    Resolve(handle, "ucs_status_string", lib->status_string, missing);
    if (!missing.empty()) {
      tried += fmt::format("{}{}: lacks {} (UCX 1.10 or newer is needed)", tried.empty() ? "" : "; ", path, missing);
      continue;  // the destructor closes it
    }
    lib->version = lib->get_version_string();
    return std::shared_ptr<const UcpLibrary>(std::move(lib));
  }
  return Error(Code::kNotSupported, "no usable UCX library ({}); install UCX (Debian: libucx0) or set "
               "WEFT_UCX_LIBRARY to a libucp.so", tried);
}

UcpLibrary::~UcpLibrary() {
  if (handle) dlclose(handle);
}

std::string UcpLibrary::Describe(ucs_status_t status) const {
  return fmt::format("{} ({})", status_string ? status_string(status) : "UCX error", static_cast<int>(status));
}

}  // namespace weft::transport::ucx
