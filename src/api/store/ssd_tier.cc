#include "api/store/ssd_tier.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#define XXH_INLINE_ALL  // header-only: no run-time library to ship with the binaries and the wheel
#include <xxhash.h>

#include "base/status.h"

namespace weft::store {
namespace {

constexpr char kMagic[8] = {'W', 'E', 'F', 'T', 'O', 'B', 'J', '1'};
constexpr const char* kSuffix = ".wobj";

// The file: this header, the key, the value. header_hash covers the header before it and the
// key; value_hash the value.
struct Header {
  char magic[8];
  uint64_t id;
  uint64_t size;
  uint32_t key_len;
  uint32_t reserved;
  uint64_t value_hash;
  uint64_t header_hash;
};
static_assert(sizeof(Header) == 48);

uint64_t HeaderHash(const Header& h, std::string_view key) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, &h, offsetof(Header, header_hash));
  XXH3_64bits_update(&state, key.data(), key.size());
  return XXH3_64bits_digest(&state);
}

// Writes every byte of iov (short writes resumed). False with errno set on failure.
bool WriteAll(int fd, std::vector<iovec> iov) {
  size_t i = 0;
  while (i < iov.size()) {
    const int n = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
    ssize_t k = ::writev(fd, iov.data() + i, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    for (auto done = static_cast<size_t>(k); done > 0 && i < iov.size();) {
      const size_t take = std::min(done, iov[i].iov_len);
      iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + take;
      iov[i].iov_len -= take;
      done -= take;
      if (iov[i].iov_len == 0) ++i;
    }
  }
  return true;
}

bool ReadAll(int fd, void* dst, size_t n, off_t at) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t k = ::pread(fd, p, n, at);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    at += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool HasSuffix(const std::string& name, std::string_view suffix) {
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Deletes the object files (and temporaries) an earlier run left in dir.
Status ClearOldFiles(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return ErrnoStatus("reading the SSD directory " + dir, errno);
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (HasSuffix(name, kSuffix) || HasSuffix(name, std::string(kSuffix) + ".tmp"))
      ::unlink((dir + "/" + name).c_str());
  }
  ::closedir(d);
  return OkStatus();
}

}  // namespace

Result<std::unique_ptr<SsdTier>> SsdTier::Open(const std::string& dir, uint64_t capacity) {
  if (capacity == 0) return Error(Code::kInvalidArgument, "an SSD tier of 0 bytes: set store_ssd_capacity");
  if (dir.empty()) return Error(Code::kInvalidArgument, "no SSD directory: set store_ssd_path");
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return ErrnoStatus("creating the SSD directory " + dir, errno);
  WEFT_RETURN_IF_ERROR(ClearOldFiles(dir));
  return std::unique_ptr<SsdTier>(new SsdTier(dir, capacity));
}

SsdTier::~SsdTier() = default;

std::string SsdTier::PathOf(uint64_t id) const { return dir_ + "/" + std::to_string(id) + kSuffix; }

uint64_t SsdTier::used() const {
  std::lock_guard lock(mu_);
  return used_;
}

void SsdTier::DropLocked(uint64_t id) {
  auto it = files_.find(id);
  if (it == files_.end()) return;
  ::unlink(PathOf(id).c_str());
  used_ -= it->second.bytes;
  order_.erase(it->second.at);
  files_.erase(it);
}

Status SsdTier::Write(uint64_t id, std::string_view key, std::span<const Span> parts) {
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.id = id;
  h.key_len = static_cast<uint32_t>(key.size());
  XXH3_state_t value;
  XXH3_64bits_reset(&value);
  std::vector<iovec> iov{{&h, sizeof h}, {const_cast<char*>(key.data()), key.size()}};
  for (const Span& p : parts) {
    if (p.size == 0) continue;
    XXH3_64bits_update(&value, p.data, p.size);
    iov.push_back({const_cast<void*>(p.data), p.size});
    h.size += p.size;
  }
  h.value_hash = XXH3_64bits_digest(&value);
  h.header_hash = HeaderHash(h, key);
  const uint64_t bytes = sizeof h + key.size() + h.size;
  if (bytes > capacity_)
    return Error(Code::kInvalidArgument, "a file of {} bytes does not fit the SSD tier's {} bytes", bytes, capacity_);
  {  // room first, reserved, so that concurrent writers never overfill the directory
    std::lock_guard lock(mu_);
    DropLocked(id);
    while (used_ + bytes > capacity_ && !order_.empty()) DropLocked(order_.front());
    used_ += bytes;
  }
  const std::string path = PathOf(id), tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && WriteAll(fd, iov);
  const int saved = errno;
  if (fd >= 0) ok = (::close(fd) == 0) && ok;
  ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0;
  std::lock_guard lock(mu_);
  if (!ok) {
    ::unlink(tmp.c_str());
    used_ -= bytes;
    return ErrnoStatus("writing " + path, saved ? saved : errno);
  }
  order_.push_back(id);
  files_[id] = File{bytes, std::prev(order_.end())};
  return OkStatus();
}

Status SsdTier::Read(uint64_t id, std::string_view key, void* dst, uint64_t size) {
  const std::string path = PathOf(id);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error(Code::kNotFound, "'{}' has no file in the SSD tier (it made room for newer ones)", key);
  Header h{};
  std::string stored_key(key.size(), '\0');
  bool ok = ReadAll(fd, &h, sizeof h, 0) && std::memcmp(h.magic, kMagic, sizeof kMagic) == 0 && h.id == id &&
            h.size == size && h.key_len == key.size() && ReadAll(fd, stored_key.data(), key.size(), sizeof h) &&
            stored_key == key && h.header_hash == HeaderHash(h, key) &&
            ReadAll(fd, dst, size, static_cast<off_t>(sizeof h + key.size())) &&
            XXH3_64bits(dst, size) == h.value_hash;
  ::close(fd);
  if (ok) return OkStatus();
  std::lock_guard lock(mu_);
  DropLocked(id);
  ::unlink(path.c_str());  // also when it was not listed (a leftover): never read it again
  return Error(Code::kIo,
               "the SSD copy of '{}' ({}) is torn or corrupted (its checksum, size or key does not match): it was "
               "deleted and is not served",
               key, path);
}

}  // namespace weft::store
