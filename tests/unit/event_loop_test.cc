// net::EventLoop: readiness callbacks, removal, Post/Stop from other threads, ticks. Every wait
// has a generous deadline so that a bug fails the test instead of hanging it; nothing asserts a
// duration.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "net/event_loop.h"

namespace weft::net {
namespace {

constexpr auto kPatience = std::chrono::seconds(20);

struct Pipe {
  UniqueFd read, write;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    read.Reset(fds[0]);
    write.Reset(fds[1]);
  }
  void Put() const { ASSERT_EQ(::write(write.get(), "x", 1), 1); }
  static void Drain(int fd) {
    char buf[64];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
  }
};

// A loop running on a thread of its own; stopped and joined at the end of the test.
class LoopThread {
 public:
  LoopThread() {
    auto loop = EventLoop::Create();
    EXPECT_TRUE(loop.ok()) << loop.status().ToString();
    loop_ = std::move(*loop);
  }
  ~LoopThread() {
    loop_->Stop();
    if (thread_.joinable()) thread_.join();
  }
  EventLoop& loop() { return *loop_; }
  void Start() {
    thread_ = std::thread([this] {
      loop_thread_id_ = std::this_thread::get_id();
      done_.set_value(loop_->Run());
    });
  }
  // Runs fn on the loop's thread and waits for it.
  void OnLoop(std::function<void()> fn) {
    auto ran = std::make_shared<std::promise<void>>();
    auto fut = ran->get_future();
    loop_->Post([fn = std::move(fn), ran] {
      fn();
      ran->set_value();
    });
    ASSERT_EQ(fut.wait_for(kPatience), std::future_status::ready) << "the posted task never ran";
  }
  // Run's result once it returned (a TIMEOUT status stands for "still running").
  Status WaitForEnd() {
    auto fut = done_.get_future();
    if (fut.wait_for(kPatience) != std::future_status::ready) return Error(Code::kTimeout, "Run did not return");
    return fut.get();
  }
  std::thread::id loop_thread_id() const { return loop_thread_id_; }

 private:
  std::unique_ptr<EventLoop> loop_;
  std::thread thread_;
  std::promise<Status> done_;
  std::atomic<std::thread::id> loop_thread_id_{};
};

TEST(EventLoop, ReadinessCallbackGetsItsOwnFd) {
  Pipe a, b;
  std::promise<std::pair<int, uint32_t>> fired;
  std::atomic<int> calls_a{0};
  LoopThread t;  // last: stopped and joined before what its callbacks use goes
  ASSERT_TRUE(t.loop().Add(a.read.get(), EPOLLIN, [&](int, uint32_t) { ++calls_a; }).ok());
  ASSERT_TRUE(t.loop()
                  .Add(b.read.get(), EPOLLIN,
                       [&](int fd, uint32_t events) {
                         Pipe::Drain(fd);
                         EXPECT_TRUE(t.loop().Remove(fd).ok());  // once is enough
                         fired.set_value({fd, events});
                       })
                  .ok());
  t.Start();
  b.Put();
  auto fut = fired.get_future();
  ASSERT_EQ(fut.wait_for(kPatience), std::future_status::ready);
  auto [fd, events] = fut.get();
  EXPECT_EQ(fd, b.read.get());
  EXPECT_TRUE(events & EPOLLIN);
  EXPECT_EQ(calls_a.load(), 0);
}

TEST(EventLoop, ModifyChangesTheEventsWatched) {
  Pipe p;
  std::promise<uint32_t> fired;
  LoopThread t;
  // The write end of an empty pipe is writable, never readable: nothing fires until EPOLLOUT.
  ASSERT_TRUE(t.loop()
                  .Add(p.write.get(), EPOLLIN,
                       [&](int fd, uint32_t events) {
                         fired.set_value(events);
                         EXPECT_TRUE(t.loop().Remove(fd).ok());
                       })
                  .ok());
  t.Start();
  t.OnLoop([&] { EXPECT_TRUE(t.loop().Modify(p.write.get(), EPOLLOUT).ok()); });
  auto fut = fired.get_future();
  ASSERT_EQ(fut.wait_for(kPatience), std::future_status::ready);
  EXPECT_TRUE(fut.get() & EPOLLOUT);
}

TEST(EventLoop, RemovedFdGetsNoMoreCallbacks) {
  Pipe p;
  std::atomic<int> calls{0};
  LoopThread t;
  ASSERT_TRUE(t.loop()
                  .Add(p.read.get(), EPOLLIN,
                       [&](int fd, uint32_t) {
                         Pipe::Drain(fd);
                         ++calls;
                       })
                  .ok());
  t.Start();
  p.Put();
  t.OnLoop([] {});
  // Level-triggered, so a callback is due until the byte is read; spin (bounded) until it ran.
  auto until = std::chrono::steady_clock::now() + kPatience;
  while (calls.load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  ASSERT_EQ(calls.load(), 1);
  t.OnLoop([&] {
    EXPECT_TRUE(t.loop().Remove(p.read.get()).ok());
    EXPECT_FALSE(t.loop().Watching(p.read.get()));
  });
  p.Put();
  t.OnLoop([] {});  // rounds pass with the pipe readable
  t.OnLoop([] {});
  EXPECT_EQ(calls.load(), 1);
}

TEST(EventLoop, PostFromAnotherThreadRunsOnTheLoopThread) {
  std::promise<std::thread::id> ran_on;
  LoopThread t;
  t.Start();
  std::thread poster([&] { t.loop().Post([&] { ran_on.set_value(std::this_thread::get_id()); }); });
  poster.join();
  auto fut = ran_on.get_future();
  ASSERT_EQ(fut.wait_for(kPatience), std::future_status::ready);
  EXPECT_EQ(fut.get(), t.loop_thread_id());
}

TEST(EventLoop, PostedTasksRunInOrder) {
  std::vector<int> order;  // touched on the loop thread only
  LoopThread t;
  t.Start();
  for (int i = 0; i < 100; ++i) t.loop().Post([&order, i] { order.push_back(i); });
  t.OnLoop([] {});
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(EventLoop, StopFromAnotherThreadEndsRun) {
  LoopThread t;  // no fds and no tick: Run would sleep forever
  t.Start();
  t.OnLoop([] {});  // Run is inside epoll_wait or about to be
  std::thread stopper([&] { t.loop().Stop(); });
  stopper.join();
  Status end = t.WaitForEnd();
  EXPECT_TRUE(end.ok()) << end.ToString();
  EXPECT_TRUE(t.loop().stopped());
}

TEST(EventLoop, StopBeforeRunReturnsAtOnce) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  (*loop)->Stop();
  EXPECT_TRUE((*loop)->Run().ok());
}

TEST(EventLoop, CallbackMayRemoveAndCloseItsOwnFdAndReuseTheNumber) {
  auto first = std::make_unique<Pipe>();
  Pipe other;
  std::atomic<int> first_calls{0}, other_calls{0};
  std::promise<int> reused_fired;
  Pipe* replacement = nullptr;
  std::unique_ptr<Pipe> replacement_owner;
  LoopThread t;
  // Both fds are readable before Run starts, so their events come in the same round: whichever
  // fires first removes both; the other's event of that round must be dropped.
  auto remove_both = [&](int fd, uint32_t) {
    if (!first) {  // a second call: the bug under test (counted, not crashed on)
      ++other_calls;
      return;
    }
    ++(fd == first->read.get() ? first_calls : other_calls);
    EXPECT_TRUE(t.loop().Remove(first->read.get()).ok());
    EXPECT_TRUE(t.loop().Remove(other.read.get()).ok());
    first.reset();  // closes the fd whose callback may be running right now
    replacement_owner = std::make_unique<Pipe>();  // likely takes the same fd number
    replacement = replacement_owner.get();
    EXPECT_TRUE(t.loop()
                    .Add(replacement->read.get(), EPOLLIN,
                         [&](int fd2, uint32_t) {
                           Pipe::Drain(fd2);
                           EXPECT_TRUE(t.loop().Remove(fd2).ok());
                           reused_fired.set_value(fd2);
                         })
                    .ok());
  };
  ASSERT_TRUE(t.loop().Add(first->read.get(), EPOLLIN, remove_both).ok());
  ASSERT_TRUE(t.loop().Add(other.read.get(), EPOLLIN, remove_both).ok());
  first->Put();
  other.Put();
  t.Start();
  t.OnLoop([] {});
  EXPECT_EQ(first_calls.load() + other_calls.load(), 1);
  // The new registration works, whatever number it got.
  int replacement_fd = -1;
  t.OnLoop([&] {
    ASSERT_NE(replacement, nullptr);
    replacement_fd = replacement->read.get();
    replacement->Put();
  });
  auto fut = reused_fired.get_future();
  ASSERT_EQ(fut.wait_for(kPatience), std::future_status::ready);
  EXPECT_EQ(fut.get(), replacement_fd);
  EXPECT_EQ(first_calls.load() + other_calls.load(), 1);
}

TEST(EventLoop, TicksHappenWithoutEventsAndMayStopTheLoop) {
  std::atomic<int> ticks{0};
  LoopThread t;
  t.loop().SetTick([&] {
    if (++ticks == 5) t.loop().Stop();
    return std::chrono::milliseconds(1);
  });
  t.Start();
  Status end = t.WaitForEnd();
  EXPECT_TRUE(end.ok()) << end.ToString();
  EXPECT_EQ(ticks.load(), 5);
}

TEST(EventLoop, TickRunsAgainAfterEvents) {
  Pipe p;
  std::atomic<int> ticks{0};
  LoopThread t;
  // An hour's wait: only events bring the next tick.
  t.loop().SetTick([&] {
    ++ticks;
    return std::chrono::milliseconds(3600 * 1000);
  });
  ASSERT_TRUE(t.loop().Add(p.read.get(), EPOLLIN, [](int fd, uint32_t) { Pipe::Drain(fd); }).ok());
  t.Start();
  t.OnLoop([] {});
  const int before = ticks.load();
  p.Put();
  t.OnLoop([] {});
  t.OnLoop([] {});
  EXPECT_GT(ticks.load(), before);
}

TEST(EventLoop, BadRegistrationsAreErrorsNotAborts) {
  auto created = EventLoop::Create();
  ASSERT_TRUE(created.ok());
  EventLoop& loop = **created;
  Pipe p;
  auto nothing = [](int, uint32_t) {};
  EXPECT_EQ(loop.Add(-1, EPOLLIN, nothing).code(), Code::kInvalidArgument);
  EXPECT_EQ(loop.Add(p.read.get(), EPOLLIN, nullptr).code(), Code::kInvalidArgument);
  ASSERT_TRUE(loop.Add(p.read.get(), EPOLLIN, nothing).ok());
  EXPECT_EQ(loop.Add(p.read.get(), EPOLLIN, nothing).code(), Code::kAlreadyExists);
  EXPECT_EQ(loop.Modify(p.write.get(), EPOLLOUT).code(), Code::kNotFound);
  EXPECT_EQ(loop.Remove(p.write.get()).code(), Code::kNotFound);
  EXPECT_TRUE(loop.Remove(p.read.get()).ok());
  EXPECT_EQ(loop.Remove(p.read.get()).code(), Code::kNotFound);
  // A regular file cannot be polled: epoll's refusal comes back as a status.
  char path[] = "/tmp/weft_event_loop_XXXXXX";
  UniqueFd file(::mkstemp(path));
  ASSERT_TRUE(file.valid());
  ::unlink(path);
  EXPECT_FALSE(loop.Add(file.get(), EPOLLIN, nothing).ok());
  EXPECT_FALSE(loop.Watching(file.get()));
}

}  // namespace
}  // namespace weft::net
