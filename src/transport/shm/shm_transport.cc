#include "transport/shm/shm_transport.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "base/log.h"

#include "transport/blob.h"

namespace weft::transport {

namespace {

constexpr uint8_t kBlobVersion = 1;
constexpr uint64_t kControlBytes = 4096;
constexpr uint32_t kLive = 1;
constexpr uint32_t kWithdrawn = 2;

// The control page's layout, shared by owner and peers (both sides use seq_cst: the owner
// stores kWithdrawn then reads in_use, a peer bumps in_use then reads state, so one of them
// always sees the other).
struct ControlWords {
  std::atomic<uint32_t> state;
  std::atomic<uint32_t> in_use;
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

struct ShmPeer final : PeerLink {
  uint32_t pid = 0;
};

struct ShmRegion final : ImportedRegion {
  void* map = MAP_FAILED;
  uint64_t map_len = 0;
  void* control = MAP_FAILED;
  ~ShmRegion() override {
    if (map != MAP_FAILED) ::munmap(map, map_len);
    if (control != MAP_FAILED) ::munmap(control, kControlBytes);
  }
  ControlWords& words() const { return *static_cast<ControlWords*>(control); }
  Status Enter() const override {
    words().in_use.fetch_add(1);
    if (words().state.load() == kLive) return OkStatus();
    words().in_use.fetch_sub(1);
    return Error(Code::kNotFound, "path shm: the peer unregistered this buffer");
  }
  void Exit() const override { words().in_use.fetch_sub(1); }
};

struct FileId {
  uint64_t dev = 0;
  uint64_t ino = 0;
};

Result<FileId> IdOf(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Error(Code::kInternal, "path shm: fstat: {}", std::strerror(errno));
  return FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

// Opens a peer's file by its fd number and checks it is the one the blob names.
Result<int> OpenPeerFile(uint32_t pid, int32_t fd, FileId want, uint64_t need_bytes) {
  std::string path = fmt::format("/proc/{}/fd/{}", pid, fd);
  int local = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (local < 0)
    return Error(Code::kUnavailable, "path shm: cannot open the peer's file {}: {}", path, std::strerror(errno));
  struct stat st {};
  bool same = ::fstat(local, &st) == 0 && static_cast<uint64_t>(st.st_dev) == want.dev &&
              static_cast<uint64_t>(st.st_ino) == want.ino && static_cast<uint64_t>(st.st_size) >= need_bytes;
  if (!same) {
    ::close(local);
    return Error(Code::kUnavailable, "path shm: {} is no longer the peer's file (or is smaller than {} bytes)", path,
                 need_bytes);
  }
  return local;
}

void* MapShared(int fd, uint64_t len, uint64_t offset) {
  return ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
}

}  // namespace

struct ShmTransport::Control {
  int fd = -1;
  void* map = MAP_FAILED;
  ~Control() {
    if (map != MAP_FAILED) ::munmap(map, kControlBytes);
    if (fd >= 0) ::close(fd);
  }
  ControlWords& words() const { return *static_cast<ControlWords*>(map); }
};

ShmTransport::~ShmTransport() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, c] : exported_) ids.push_back(id);
  }
  for (uint64_t id : ids) WithdrawRegion(id);
}

ShmTransport::ShmTransport(std::string node_id) : node_id_(std::move(node_id)) {}

uint32_t ShmTransport::capabilities() const {
  return kCapHostMemory | kCapSameNode | (node_id_.empty() ? 0 : kCapRegions);
}

bool ShmTransport::Serves(const RouteKey& key) const {
  return key.locality == Locality::kSameNode && !IsDevice(key.src) && !IsDevice(key.dst);
}

double ShmTransport::CostNanos(const RouteKey&, uint64_t bytes) const {
  // Same memory bandwidth as memcpy; the peer's pages may sit on another NUMA node.
  return 30.0 + static_cast<double>(bytes) / 8.0;
}

Status ShmTransport::Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) {
  std::memmove(dst.mapped, src.mapped, len);
  return OkStatus();
}

std::string_view ShmTransport::Explain(const RouteKey&) const {
  return "a same-node peer's host slice is mapped here from its memfd: load/store through the shared mapping";
}

Result<std::string> ShmTransport::EndpointBlob() const {
  if (node_id_.empty()) return Error(Code::kNotSupported, "path shm: no node identity given");
  auto w = BlobWriter(kBlobVersion);
  w.String(node_id_);
  w.U32(static_cast<uint32_t>(::getpid()));
  return BlobText(w);
}

Result<std::string> ShmTransport::ExportRegion(const LocalRegion& region) {
  if (region.device) return Error(Code::kNotSupported, "path shm maps host memory only");
  if (region.fd < 0)
    return Error(Code::kNotSupported, "path shm: the region is not backed by a shareable file "
                                      "(allocate it with AllocateManagedBuffer to share it by mapping)");
  WEFT_ASSIGN_OR_RETURN(FileId data, IdOf(region.fd));
  auto control = std::make_unique<Control>();
  control->fd = ::memfd_create("weft-shm-control", MFD_CLOEXEC);
  if (control->fd < 0 || ::ftruncate(control->fd, kControlBytes) != 0 ||
      (control->map = MapShared(control->fd, kControlBytes, 0)) == MAP_FAILED)
    return Error(Code::kUnavailable, "path shm: a control page: {}", std::strerror(errno));
  control->words().state.store(kLive);
  WEFT_ASSIGN_OR_RETURN(FileId ctl, IdOf(control->fd));
  auto w = BlobWriter(kBlobVersion);
  w.I32(region.fd);
  w.U64(data.dev);
  w.U64(data.ino);
  w.U64(region.fd_offset);
  w.I32(control->fd);
  w.U64(ctl.dev);
  w.U64(ctl.ino);
  std::lock_guard lock(mu_);
  exported_[region.id] = std::move(control);
  return BlobText(w);
}

void ShmTransport::WithdrawRegion(uint64_t region_id) {
  std::unique_ptr<Control> control;
  {
    std::lock_guard lock(mu_);
    auto it = exported_.find(region_id);
    if (it == exported_.end()) return;
    control = std::move(it->second);
    exported_.erase(it);
  }
  control->words().state.store(kWithdrawn);
  // Peers' ops in flight are memcpys of at most a piece; a peer that died inside one never
  // exits, so the wait is bounded (its process, and so its writes, are gone).
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (control->words().in_use.load() != 0) {
    if (std::chrono::steady_clock::now() > give_up) {
      WEFT_LOG_WARN("path shm: {} peer op(s) still counted in a withdrawn region after 10 s (a peer died in one?)",
                    control->words().in_use.load());
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

Result<std::unique_ptr<PeerLink>> ShmTransport::Connect(std::string_view endpoint_blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(endpoint_blob, kBlobVersion, "shm", "endpoint"));
  std::string node;
  auto peer = std::make_unique<ShmPeer>();
  Status s = r.String(node, 256);
  if (s.ok()) s = r.U32(peer->pid);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return BadBlob(s, "shm", "endpoint");
  if (node != node_id_)
    return Error(Code::kUnavailable, "path shm: the peer runs on another node ({}; this is {})", node, node_id_);
  if (peer->pid == 0) return Error(Code::kProtocol, "endpoint blob of path shm has pid 0");
  return std::unique_ptr<PeerLink>(std::move(peer));
}

Result<std::unique_ptr<ImportedRegion>> ShmTransport::ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                                   std::string_view blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(blob, kBlobVersion, "shm", "region"));
  int32_t fd = -1, ctl_fd = -1;
  FileId data, ctl;
  uint64_t offset = 0;
  Status s = r.I32(fd);
  if (s.ok()) s = r.U64(data.dev);
  if (s.ok()) s = r.U64(data.ino);
  if (s.ok()) s = r.U64(offset);
  if (s.ok()) s = r.I32(ctl_fd);
  if (s.ok()) s = r.U64(ctl.dev);
  if (s.ok()) s = r.U64(ctl.ino);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return BadBlob(s, "shm", "region");
  if (fd < 0 || ctl_fd < 0 || offset % 4096 != 0 || offset > UINT64_MAX - len)
    return Error(Code::kProtocol, "region blob of path shm: fd {} / {} / offset {} is not usable", fd, ctl_fd, offset);
  const auto pid = static_cast<const ShmPeer&>(peer).pid;
  auto region = std::make_unique<ShmRegion>();
  WEFT_ASSIGN_OR_RETURN(int data_fd, OpenPeerFile(pid, fd, data, offset + len));
  region->map = MapShared(data_fd, len, offset);
  ::close(data_fd);
  WEFT_ASSIGN_OR_RETURN(int control_fd, OpenPeerFile(pid, ctl_fd, ctl, kControlBytes));
  region->control = MapShared(control_fd, kControlBytes, 0);
  ::close(control_fd);
  if (region->map == MAP_FAILED || region->control == MAP_FAILED)
    return Error(Code::kUnavailable, "path shm: mapping the peer's region: {}", std::strerror(errno));
  region->map_len = len;
  region->base = base;
  region->len = len;
  region->mapped = static_cast<uint8_t*>(region->map);
  return std::unique_ptr<ImportedRegion>(std::move(region));
}

double ShmTransport::RemoteCostNanos(uint64_t bytes) const { return 30.0 + static_cast<double>(bytes) / 8.0; }

std::string_view ShmTransport::ExplainRemote() const {
  return "the peer's region is a memfd on this node, mapped here: load/store through the shared mapping";
}

}  // namespace weft::transport
