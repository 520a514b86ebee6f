// A store client's SSD tier: the values of objects this client wrote, one file each in a local
// directory, so that an object the master evicts from memory can still be served by its writer
// and promoted back into memory. Files are named by the object's id (unique per put, given by the
// master), so a file of a removed or replaced object is never mistaken for a live one: the
// master is always asked first, and only the id it names is read.
//
// A file is written to a temporary name and renamed, and carries an xxHash (XXH3-64) of its
// header, key and value: a torn or corrupted file fails its check, is deleted and is never
// served. Files of objects that were removed are not deleted at once (the writer is not told);
// they go first when the directory needs room, oldest first.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include <weft/store.h>

#include "base/result.h"

namespace weft::store {

class SsdTier {
 public:
  // Creates `dir` if needed and deletes the object files of an earlier run (their master knew
  // another incarnation of this client). INVALID_ARGUMENT for capacity 0; IO when the directory
  // cannot be made or read.
  static Result<std::unique_ptr<SsdTier>> Open(const std::string& dir, uint64_t capacity);
  ~SsdTier();
  SsdTier(const SsdTier&) = delete;
  SsdTier& operator=(const SsdTier&) = delete;

  // The value of object `id` (parts end to end) under `key`. Deletes the oldest files until it
  // fits; INVALID_ARGUMENT when the value alone exceeds the capacity; IO when writing fails.
  Status Write(uint64_t id, std::string_view key, std::span<const Span> parts);
  // Reads the value of object `id` into dst, which has room for `size` bytes (its size as the
  // master knows it). NOT_FOUND when there is no such file; IO when the file is torn, corrupted
  // or of another key or size (it is deleted, nothing is served).
  Status Read(uint64_t id, std::string_view key, void* dst, uint64_t size);

  uint64_t used() const;       // bytes of the files
  uint64_t capacity() const { return capacity_; }
  const std::string& dir() const { return dir_; }

 private:
  SsdTier(std::string dir, uint64_t capacity) : dir_(std::move(dir)), capacity_(capacity) {}
  std::string PathOf(uint64_t id) const;
  void DropLocked(uint64_t id);

  const std::string dir_;
  const uint64_t capacity_;
  mutable std::mutex mu_;
  std::list<uint64_t> order_;  // file ids, oldest first
  struct File {
    uint64_t bytes;
    std::list<uint64_t>::iterator at;
  };
  std::unordered_map<uint64_t, File> files_;
  uint64_t used_ = 0;
};

}  // namespace weft::store
