#include "net/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace weft::net {

namespace {

constexpr int kMaxEventsPerRound = 64;

}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::Create() {
  std::unique_ptr<EventLoop> loop(new EventLoop());
  loop->epoll_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!loop->epoll_.valid()) return ErrnoStatus("epoll_create1", errno);
  loop->wake_.Reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!loop->wake_.valid()) return ErrnoStatus("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // no Entry: the wake-up
  if (::epoll_ctl(loop->epoll_.get(), EPOLL_CTL_ADD, loop->wake_.get(), &ev) != 0)
    return ErrnoStatus("epoll_ctl(eventfd)", errno);
  return loop;
}

EventLoop::~EventLoop() = default;

Status EventLoop::Add(int fd, uint32_t events, Callback callback) {
  if (fd < 0 || !callback) return Error(Code::kInvalidArgument, "event loop: fd {} without a callback", fd);
  if (entries_.count(fd)) return Error(Code::kAlreadyExists, "event loop: fd {} is watched already", fd);
  auto entry = std::make_unique<Entry>(Entry{fd, std::move(callback)});
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = entry.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return ErrnoStatus("epoll_ctl(ADD)", errno);
  entries_.emplace(fd, std::move(entry));
  return OkStatus();
}

Status EventLoop::Modify(int fd, uint32_t events) {
  auto it = entries_.find(fd);
  if (it == entries_.end()) return Error(Code::kNotFound, "event loop: fd {} is not watched", fd);
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = it->second.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) return ErrnoStatus("epoll_ctl(MOD)", errno);
  return OkStatus();
}

Status EventLoop::Remove(int fd) {
  auto it = entries_.find(fd);
  if (it == entries_.end()) return Error(Code::kNotFound, "event loop: fd {} is not watched", fd);
  it->second->removed = true;
  retired_.push_back(std::move(it->second));
  entries_.erase(it);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0) return ErrnoStatus("epoll_ctl(DEL)", errno);
  return OkStatus();
}

void EventLoop::Post(Task task) {
  {
    std::lock_guard lock(posted_mu_);
    posted_.push_back(std::move(task));
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);  // EAGAIN: already pending
}

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void EventLoop::RunPosted() {
  uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(wake_.get(), &count, sizeof count);
  std::vector<Task> tasks;
  {
    std::lock_guard lock(posted_mu_);
    tasks.swap(posted_);
  }
  for (Task& task : tasks) task();
}

void EventLoop::Dispatch(const epoll_event& event) {
  auto* entry = static_cast<Entry*>(event.data.ptr);
  if (!entry) return RunPosted();
  if (entry->removed) return;  // removed earlier in this round
  // A copy is not needed: the entry outlives the call (Remove retires it until the round ends).
  entry->callback(entry->fd, event.events);
}

int EventLoop::NextWaitMs() {
  if (!tick_) return -1;
  int64_t ms = tick_().count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, INT_MAX));
}

Status EventLoop::Run() {
  epoll_event events[kMaxEventsPerRound];
  while (!stopped()) {
    const int wait_ms = NextWaitMs();
    if (stopped()) break;  // the tick may have stopped the loop
    int n = ::epoll_wait(epoll_.get(), events, kMaxEventsPerRound, wait_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("epoll_wait", errno);
    for (int i = 0; i < n; ++i) Dispatch(events[i]);
    retired_.clear();
  }
  return OkStatus();
}

}  // namespace weft::net
