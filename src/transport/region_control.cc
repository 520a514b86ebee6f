#include "transport/region_control.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
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

constexpr uint64_t kPageBytes = 4096;
constexpr uint32_t kLive = 1;
constexpr uint32_t kWithdrawn = 2;

// Shared by owner and peers. Both sides use seq_cst: the owner stores kWithdrawn then reads
// in_use, a peer bumps in_use then reads state, so one of them always sees the other.
struct Words {
  std::atomic<uint32_t> state;
  std::atomic<uint32_t> in_use;
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

Words& WordsAt(void* map) { return *static_cast<Words*>(map); }

void* MapPage(int fd) {
  void* p = ::mmap(nullptr, kPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? nullptr : p;
}

}  // namespace

Result<int> OpenPeerFile(uint32_t pid, int32_t fd, uint64_t dev, uint64_t ino, uint64_t need_bytes,
                         std::string_view transport) {
  std::string path = fmt::format("/proc/{}/fd/{}", pid, fd);
  int local = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (local < 0)
    return Error(Code::kUnavailable, "path {}: cannot open the peer's file {}: {}", transport, path,
                 std::strerror(errno));
  struct stat st {};
  bool same = ::fstat(local, &st) == 0 && static_cast<uint64_t>(st.st_dev) == dev &&
              static_cast<uint64_t>(st.st_ino) == ino && static_cast<uint64_t>(st.st_size) >= need_bytes;
  if (!same) {
    ::close(local);
    return Error(Code::kUnavailable, "path {}: {} is no longer the peer's file (or is smaller than {} bytes)",
                 transport, path, need_bytes);
  }
  return local;
}

Result<std::unique_ptr<OwnerControl>> OwnerControl::Create() {
  std::unique_ptr<OwnerControl> c(new OwnerControl());
  c->fd_ = ::memfd_create("weft-region-control", MFD_CLOEXEC);
  if (c->fd_ < 0 || ::ftruncate(c->fd_, kPageBytes) != 0 || !(c->map_ = MapPage(c->fd_)))
    return Error(Code::kUnavailable, "a region control page: {}", std::strerror(errno));
  WordsAt(c->map_).state.store(kLive);
  return c;
}

OwnerControl::~OwnerControl() {
  if (map_) ::munmap(map_, kPageBytes);
  if (fd_ >= 0) ::close(fd_);
}

Status OwnerControl::Describe(wire::Writer& w) const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return Error(Code::kInternal, "fstat of a control page: {}", std::strerror(errno));
  w.I32(fd_);
  w.U64(static_cast<uint64_t>(st.st_dev));
  w.U64(static_cast<uint64_t>(st.st_ino));
  return OkStatus();
}

void OwnerControl::Withdraw() {
  Words& words = WordsAt(map_);
  words.state.store(kWithdrawn);
  // Peers' ops in flight are single copies; a peer that died inside one never exits, so the wait
  // is bounded (its process, and so its writes, are gone).
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (words.in_use.load() != 0) {
    if (std::chrono::steady_clock::now() > give_up) {
      WEFT_LOG_WARN("{} peer op(s) still counted in a withdrawn region after 10 s (a peer died in one?)",
                    words.in_use.load());
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

ExportedControls::~ExportedControls() {
  std::map<uint64_t, std::unique_ptr<OwnerControl>> left;
  {
    std::lock_guard lock(mu_);
    left.swap(controls_);
  }
  for (auto& [id, control] : left) control->Withdraw();
}

void ExportedControls::Add(uint64_t region_id, std::unique_ptr<OwnerControl> control) {
  std::lock_guard lock(mu_);
  controls_[region_id] = std::move(control);
}

void ExportedControls::Withdraw(uint64_t region_id) {
  std::unique_ptr<OwnerControl> control;
  {
    std::lock_guard lock(mu_);
    auto it = controls_.find(region_id);
    if (it == controls_.end()) return;
    control = std::move(it->second);
    controls_.erase(it);
  }
  control->Withdraw();  // outside the lock: it waits for peers
}

Result<std::unique_ptr<PeerControl>> PeerControl::Open(uint32_t pid, wire::Reader& r, std::string_view transport) {
  int32_t fd = -1;
  uint64_t dev = 0, ino = 0;
  Status s = r.I32(fd);
  if (s.ok()) s = r.U64(dev);
  if (s.ok()) s = r.U64(ino);
  if (!s.ok()) return BadBlob(s, transport, "region");
  if (fd < 0) return Error(Code::kProtocol, "region blob of path {}: control fd {}", transport, fd);
  WEFT_ASSIGN_OR_RETURN(int local, OpenPeerFile(pid, fd, dev, ino, kPageBytes, transport));
  std::unique_ptr<PeerControl> c(new PeerControl());
  c->map_ = MapPage(local);
  int err = errno;
  ::close(local);
  if (!c->map_) return Error(Code::kUnavailable, "path {}: mapping a control page: {}", transport, std::strerror(err));
  c->pid_ = pid;
#ifdef SYS_pidfd_open
  c->pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
#endif
  return c;
}

PeerControl::~PeerControl() {
  if (map_) ::munmap(map_, kPageBytes);
  if (pidfd_ >= 0) ::close(pidfd_);
}

Status PeerControl::OwnerAlive() const {
  bool exited = false;
  if (pidfd_ >= 0) {
    pollfd p{pidfd_, POLLIN, 0};
    exited = ::poll(&p, 1, 0) > 0;
  } else {
    exited = ::kill(static_cast<pid_t>(pid_), 0) != 0 && errno == ESRCH;  // no pidfd: pid reuse is possible
  }
  if (!exited) return OkStatus();
  return Error(Code::kPeerDown, "the peer's process {} exited; the memory it shared went with it (reach it again "
               "once it restarts)", pid_);
}

Status PeerControl::Enter() const {
  Words& words = WordsAt(map_);
  words.in_use.fetch_add(1);
  if (words.state.load() == kLive) return OkStatus();
  words.in_use.fetch_sub(1);
  return Error(Code::kNotFound, "the peer unregistered this buffer");
}

void PeerControl::Exit() const { WordsAt(map_).in_use.fetch_sub(1); }

}  // namespace weft::transport
