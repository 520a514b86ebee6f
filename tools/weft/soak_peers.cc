#include "tools/weft/soak_peers.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "tools/weft/interrupts.h"

namespace weft::tools::soak {

void ChildRegistry::Add(pid_t p) {
  std::lock_guard lock(mu);
  pids.push_back(p);
}
void ChildRegistry::Remove(pid_t p) {
  std::lock_guard lock(mu);
  pids.erase(std::remove(pids.begin(), pids.end(), p), pids.end());
}
void ChildRegistry::KillAll() {
  std::lock_guard lock(mu);
  for (pid_t p : pids) kill(p, SIGKILL);
  for (pid_t p : pids) waitpid(p, nullptr, 0);
  pids.clear();
}

std::string HowItEnded(int st) {
  if (WIFEXITED(st)) return fmt::format("exited with status {}", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return fmt::format("was killed by signal {} ({})", WTERMSIG(st), strsignal(WTERMSIG(st)));
  return fmt::format("ended with wait status {}", st);
}

PeerSet::PeerSet(Board& board, int board_fd, std::string log_dir,
                 std::function<std::vector<std::string>(uint32_t)> command,
                 std::function<std::vector<std::string>(uint32_t)> env, ChildRegistry& registry)
    : board_(board),
      board_fd_(board_fd),
      log_dir_(std::move(log_dir)),
      command_(std::move(command)),
      env_(std::move(env)),
      registry_(registry),
      pids_(board.header.slots, -1) {}

PeerSet::~PeerSet() {
  for (uint32_t s = 0; s < pids_.size(); ++s)
    if (pids_[s] > 0) Kill(s);
}

std::string PeerSet::LogPath(uint32_t slot) const { return fmt::format("{}/peer{}.log", log_dir_, slot); }

void PeerSet::BumpEpoch(uint32_t slot) {
  const int32_t rank = board_.slot[slot].rank.load();
  if (rank >= 0 && static_cast<uint32_t>(rank) < kMaxRanks) board_.header.rank_epoch[rank].fetch_add(1);
}

Status PeerSet::Start(uint32_t slot) {
  SlotRecord& rec = board_.slot[slot];
  BumpEpoch(slot);  // the new incarnation's memory is fresh
  rec.incarnation.fetch_add(1);
  rec.state.store(static_cast<uint32_t>(SlotState::kStarting));
  for (WorkerRecord& w : rec.workers) w.busy_since_ns.store(0);  // a killed op is no hang
  std::vector<std::string> args = command_(slot), env = env_(slot);
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int log = open(LogPath(slot).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (log >= 0) {
    posix_spawn_file_actions_adddup2(&actions, log, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, log, STDERR_FILENO);
  }
  // dup2 onto another number clears close-on-exec there: the peer inherits the board.
  posix_spawn_file_actions_adddup2(&actions, board_fd_, kBoardFd);
  posix_spawnattr_t attr;
  NoBlockedSignals(&attr);  // the run blocks SIGINT/SIGTERM (Interrupts); the peer must not
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (log >= 0) close(log);
  if (rc != 0) {
    rec.state.store(static_cast<uint32_t>(SlotState::kDown));
    return ErrnoStatus(fmt::format("cannot start peer {} ({})", slot, args[0]), rc);
  }
  pids_[slot] = pid;
  registry_.Add(pid);
  return OkStatus();
}

void PeerSet::Kill(uint32_t slot) {
  const pid_t pid = pids_[slot];
  if (pid <= 0) return;
  BumpEpoch(slot);
  kill(pid, SIGKILL);  // also ends a stopped process
  waitpid(pid, nullptr, 0);
  registry_.Remove(pid);
  pids_[slot] = -1;
  board_.slot[slot].state.store(static_cast<uint32_t>(SlotState::kDown));
  for (WorkerRecord& w : board_.slot[slot].workers) w.busy_since_ns.store(0);
}

Status PeerSet::Freeze(uint32_t slot) {
  if (pids_[slot] <= 0 || kill(pids_[slot], SIGSTOP) != 0) return Error(Code::kNotFound, "peer {} is not running", slot);
  return OkStatus();
}

Status PeerSet::Thaw(uint32_t slot) {
  if (pids_[slot] <= 0 || kill(pids_[slot], SIGCONT) != 0) return Error(Code::kNotFound, "peer {} is not running", slot);
  return OkStatus();
}

bool PeerSet::Running(uint32_t slot) const { return pids_[slot] > 0; }

std::optional<std::string> PeerSet::EndedBySelf(uint32_t slot) {
  const pid_t pid = pids_[slot];
  if (pid <= 0) return std::nullopt;
  int st = 0;
  if (waitpid(pid, &st, WNOHANG) != pid) return std::nullopt;
  registry_.Remove(pid);
  pids_[slot] = -1;
  board_.slot[slot].state.store(static_cast<uint32_t>(SlotState::kDown));
  return HowItEnded(st);
}

std::vector<std::string> PeerSet::WaitAll(int ms) {
  std::vector<std::string> bad;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (uint32_t s = 0; s < pids_.size(); ++s) {
    const pid_t pid = pids_[s];
    if (pid <= 0) continue;
    int st = 0;
    pid_t r = 0;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (r != pid) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      bad.push_back(fmt::format("peer {} (pid {}) did not exit within {} ms of being told to leave; killed", s, pid, ms));
    } else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
      bad.push_back(fmt::format("peer {} (pid {}) {} at the end", s, pid, HowItEnded(st)));
    }
    registry_.Remove(pid);
    pids_[s] = -1;
  }
  return bad;
}

}  // namespace weft::tools::soak
