#include "base/worker_pool.h"

namespace weft {

WorkerPool::WorkerPool(unsigned threads) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  try {
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  } catch (...) {
    // A thread that cannot be started (std::system_error: EAGAIN) must not leave the started
    // ones joinable: destroying a joinable std::thread terminates the process. Stop and join
    // them, then let the caller see the exception.
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    throw;
  }
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkerPool::Submit(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

WorkerPool::Load WorkerPool::load() const {
  std::lock_guard lock(mu_);
  return Load{queue_.size(), running_};
}

void WorkerPool::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lock.unlock();
    task();
    task = nullptr;  // what the task holds goes before it counts as done
    lock.lock();
    --running_;
  }
}

}  // namespace weft
