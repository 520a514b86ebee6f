// The guarded batch (Directory::Commit) and the HA journal writer (meta/journal_writer.h), over
// the in-process store and a private etcd: batches land whole or not at all, only while the guard
// holds; the writer keeps every key equal to its last change, in order, past the directory's
// per-transaction limit, and writes nothing once its guard is gone.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/random.h"
#include "meta/journal_writer.h"
#include "support/test_directory.h"

namespace weft::meta {
namespace {

using namespace std::chrono_literals;
using etcd_test::Backend;
using etcd_test::BackendName;

class JournalWriterTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }

  void SetUp() override {
    const std::string url = etcd_test::TestDirectoryUrl(GetParam(), etcd_);
    if (url.empty()) return;
    DirectoryOptions options;
    options.timeout = 10s;
    auto d = OpenDirectory(url, options);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(d).value();
    prefix_ = fmt::format("/weft/jw-{:016x}/", FreshSeed());
    auto lease = dir_->Grant(30s);
    ASSERT_TRUE(lease.ok()) << lease.status().ToString();
    guard_ = {prefix_ + "leader", *lease};
    ASSERT_TRUE(dir_->Put(guard_.key, "me", guard_.lease).ok());
  }

  std::map<std::string, std::string> Stored() {
    auto listed = dir_->List(prefix_ + "s/");
    EXPECT_TRUE(listed.ok()) << listed.status().ToString();
    std::map<std::string, std::string> out;
    if (listed.ok()) out.insert(listed->begin(), listed->end());
    return out;
  }

  std::string Key(int i) const { return fmt::format("{}s/{:05}", prefix_, i); }

  static etcd_test::EtcdProcess* etcd_;
  std::unique_ptr<Directory> dir_;
  std::string prefix_;
  WriteGuard guard_;
};

etcd_test::EtcdProcess* JournalWriterTest::etcd_ = nullptr;

TEST_P(JournalWriterTest, ACommitLandsWholeWhileTheGuardHoldsAndNotAtAllAfter) {
  ASSERT_TRUE(dir_->Put(Key(1), "old").ok());
  std::vector<DirectoryWrite> writes = {{Key(0), "a"}, {Key(1), std::nullopt}, {Key(2), "c"}, {Key(3), std::nullopt}};
  ASSERT_TRUE(dir_->Commit(writes, guard_).ok());
  EXPECT_EQ(Stored(), (std::map<std::string, std::string>{{Key(0), "a"}, {Key(2), "c"}}));

  WriteGuard stranger{guard_.key, guard_.lease + 1};
  std::vector<DirectoryWrite> more = {{Key(0), std::nullopt}, {Key(4), "e"}};
  Status refused = dir_->Commit(more, stranger);
  EXPECT_EQ(refused.code(), Code::kPermissionDenied) << refused.ToString();
  ASSERT_TRUE(dir_->Revoke(guard_.lease).ok());  // the guard key goes with its lease
  refused = dir_->Commit(more, guard_);
  EXPECT_EQ(refused.code(), Code::kPermissionDenied) << refused.ToString();
  EXPECT_EQ(Stored(), (std::map<std::string, std::string>{{Key(0), "a"}, {Key(2), "c"}}));
}

TEST_P(JournalWriterTest, ACommitOverTheLimitIsRefusedBeforeAnythingIsSent) {
  std::vector<DirectoryWrite> writes;
  for (size_t i = 0; i <= Directory::kMaxCommitWrites; ++i) writes.push_back({Key(static_cast<int>(i)), "v"});
  EXPECT_EQ(dir_->Commit(writes, guard_).code(), Code::kInvalidArgument);
  EXPECT_TRUE(Stored().empty());
}

TEST_P(JournalWriterTest, EveryKeyEndsAtItsLastChangeAcrossManyBatches) {
  std::map<std::string, std::string> expected;
  {
    JournalWriter writer(*dir_, {guard_});
    uint64_t rng = FreshSeed();
    constexpr int kKeys = 300;  // more than one transaction's worth
    for (int round = 0; round < 5; ++round) {
      for (int i = 0; i < kKeys; ++i) {
        const std::string key = Key(i);
        if (SplitMix64(rng) % 4 == 0) {
          writer.Erase(key);
          expected.erase(key);
        } else {
          const std::string value = fmt::format("{}-{}", round, SplitMix64(rng));
          writer.Set(key, value);
          expected[key] = value;
        }
      }
      if (round == 2) {
        ASSERT_TRUE(writer.Flush(Deadline::After(30s)).ok());
      }
    }
    Status flushed = writer.Flush(Deadline::After(30s));
    ASSERT_TRUE(flushed.ok()) << flushed.ToString();
    EXPECT_EQ(writer.backlog(), 0u);
  }
  EXPECT_EQ(Stored(), expected);
}

TEST_P(JournalWriterTest, AWriterWhoseGuardIsGoneWritesNothingMoreAndSaysSo) {
  JournalWriter writer(*dir_, {guard_});
  writer.Set(Key(0), "kept");
  ASSERT_TRUE(writer.Flush(Deadline::After(30s)).ok());
  ASSERT_TRUE(dir_->Delete(guard_.key).ok());  // another master's election took the key over
  writer.Set(Key(1), "dropped");
  Status flushed = writer.Flush(Deadline::After(30s));
  EXPECT_EQ(flushed.code(), Code::kPermissionDenied) << flushed.ToString();
  EXPECT_EQ(writer.lost().code(), Code::kPermissionDenied);
  writer.Set(Key(2), "dropped too");
  EXPECT_EQ(writer.Flush(Deadline::After(30s)).code(), Code::kPermissionDenied);
  EXPECT_EQ(Stored(), (std::map<std::string, std::string>{{Key(0), "kept"}}));
}

INSTANTIATE_TEST_SUITE_P(Backends, JournalWriterTest, ::testing::Values(Backend::kLocal, Backend::kEtcd),
                         BackendName);

}  // namespace
}  // namespace weft::meta
