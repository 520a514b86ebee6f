// One epoll loop, the single concurrency model of weft's servers: the coordinator runs one on its
// thread, the tcp data server one per progress thread. Everything about a connection happens on
// the loop's thread, so connection state needs no locks; other threads reach the loop only
// through Post (work to run on the loop's thread) and Stop.
//
// Readiness callbacks are keyed by fd. A callback may add, modify or remove any fd, its own
// included: a removed fd's pending events of the same round are dropped, and the callback object
// stays alive until the round ends, so removing (and closing) the fd from inside its own callback
// is safe, even when the fd number is reused at once by a new registration.
//
// Errors are values: setup and epoll failures come back as Status, never as exceptions or aborts.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "net/unix_socket.h"  // UniqueFd

namespace weft::net {

class EventLoop {
 public:
  // fd and the epoll events that were reported (EPOLLIN, EPOLLOUT, EPOLLHUP, ...).
  using Callback = std::function<void(int fd, uint32_t events)>;
  using Task = std::function<void()>;
  // Runs on the loop's thread before every wait; returns how long the loop may sleep before it
  // must be called again (it is also called again after any event). Servers use it for their
  // idle and heartbeat timeouts.
  using Tick = std::function<std::chrono::milliseconds()>;

  static Result<std::unique_ptr<EventLoop>> Create();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Loop thread only (or before Run starts). `events` are epoll flags; edge-triggered flags are
  // the caller's business. ALREADY_EXISTS for an fd already added, NOT_FOUND for one not added.
  Status Add(int fd, uint32_t events, Callback callback);
  Status Modify(int fd, uint32_t events);
  // Call before closing the fd. The callback is never called again (not even for events already
  // collected in this round); the fd is forgotten even when epoll reports an error.
  Status Remove(int fd);
  bool Watching(int fd) const { return entries_.count(fd) > 0; }

  // Loop thread only, before Run. Without a tick the loop sleeps until an event.
  void SetTick(Tick tick) { tick_ = std::move(tick); }

  // Any thread: queues `task` for the loop's thread and wakes the loop. Tasks run in order;
  // those still queued when Run returns are dropped, never run.
  void Post(Task task);
  // Any thread (a callback included): Run returns after the current round. Once stopped, the
  // loop stays stopped (Run returns at once).
  void Stop();
  bool stopped() const { return stop_.load(std::memory_order_acquire); }

  // Waits for events and dispatches them until Stop. The error of a failing epoll_wait.
  Status Run();

 private:
  struct Entry {
    int fd;
    Callback callback;
    bool removed = false;
  };

  EventLoop() = default;
  void Dispatch(const epoll_event& event);
  void RunPosted();
  int NextWaitMs();

  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: Post and Stop write it so that epoll_wait returns
  std::unordered_map<int, std::unique_ptr<Entry>> entries_;
  // Entries removed during this round, kept until it ends: events already collected still point
  // at them, and a callback may be removing itself.
  std::vector<std::unique_ptr<Entry>> retired_;
  Tick tick_;
  std::atomic<bool> stop_{false};
  std::mutex posted_mu_;
  std::vector<Task> posted_;
};

}  // namespace weft::net
