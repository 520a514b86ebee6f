// The pool's transport blobs (api/bm/slice_blobs.h): their formats, what a peer advertises, and
// how a peer reads another's: unknown names skipped, a bad blob refused with PROTOCOL naming its
// transport while the others still read.
#include <gtest/gtest.h>

#include "api/bm/slice_blobs.h"
#include "transport/blob.h"

namespace weft::bm {
namespace {

TEST(SliceBlobs, RoundTrip) {
  ShmSliceBlob shm{1};
  CudaSliceBlob cuda{0, 2u << 20, 3};
  PathSliceBlob path{"\x01" "endpoint", "\x01" "host region", "\x01" "device region"};
  auto s = DecodeShmBlob(EncodeShmBlob(shm), 2);
  auto c = DecodeCudaBlob(EncodeCudaBlob(cuda), 1);
  auto p = DecodePathBlob(EncodePathBlob(path), "tcp");
  ASSERT_TRUE(s.ok() && c.ok() && p.ok()) << s.status().ToString() << c.status().ToString() << p.status().ToString();
  EXPECT_EQ(*s, shm);
  EXPECT_EQ(*c, cuda);
  EXPECT_EQ(*p, path);
  EXPECT_EQ(EncodeShmBlob(shm)[0], 1) << "format version 1";
  EXPECT_EQ(EncodePathBlob(path)[0], 2) << "format version 2";
  path.device_region.clear();  // no device slice
  EXPECT_EQ(*DecodePathBlob(EncodePathBlob(path), "tcp"), path);
}

// Every way a blob can be wrong is PROTOCOL naming its transport, never a crash.
TEST(SliceBlobs, MalformedBlobsAreProtocolNamingTheTransport) {
  auto expect_protocol = [](const Status& s, std::string_view transport, std::string_view why) {
    EXPECT_EQ(s.code(), Code::kProtocol) << why << ": " << s.ToString();
    EXPECT_NE(s.message().find(transport), std::string::npos) << why << ": " << s.ToString();
  };
  const std::string shm = EncodeShmBlob({0});
  const std::string cuda = EncodeCudaBlob({0, 4096, 0});
  const std::string tcp = EncodePathBlob({"e", "h", ""});
  for (size_t n = 0; n < shm.size(); ++n) expect_protocol(DecodeShmBlob(shm.substr(0, n), 1).status(), "shm", "short");
  for (size_t n = 0; n < cuda.size(); ++n)
    expect_protocol(DecodeCudaBlob(cuda.substr(0, n), 1).status(), "cuda", "short");
  for (size_t n = 0; n < tcp.size(); ++n)
    expect_protocol(DecodePathBlob(tcp.substr(0, n), "tcp").status(), "tcp", "short");
  expect_protocol(DecodeShmBlob(shm + "x", 1).status(), "shm", "trailing bytes");
  expect_protocol(DecodeShmBlob("\x02" + shm.substr(1), 1).status(), "shm", "version 2");
  expect_protocol(DecodeShmBlob(shm, 0).status(), "shm", "a descriptor that did not come");
  expect_protocol(DecodeShmBlob(EncodeShmBlob({8}), 8).status(), "shm", "index past the descriptors");
  expect_protocol(DecodeCudaBlob(cuda, 0).status(), "cuda", "a descriptor that did not come");
  expect_protocol(DecodeCudaBlob(EncodeCudaBlob({0, 0, 0}), 1).status(), "cuda", "a device slice of 0 bytes");
  expect_protocol(DecodePathBlob(EncodePathBlob({"", "h", ""}), "tcp").status(), "tcp", "no endpoint");
  expect_protocol(DecodePathBlob(EncodePathBlob({"e", "", "d"}), "tcp").status(), "tcp", "no host region");
  expect_protocol(DecodePathBlob("\x01" + tcp.substr(1), "tcp").status(), "tcp", "version 1 (tcp's old fields)");
  expect_protocol(DecodePathBlob(std::string(transport::kMaxBlobBytes + 1, '\x02'), "tcp").status(), "tcp",
                  "oversized");
}

// Only what applies is advertised, and the blobs index the descriptors in the order they go.
TEST(SliceBlobs, AdvertiseOnlyWhatApplies) {
  OwnSlices own;
  own.host_fd = 10;
  auto only_shm = AdvertiseSlices(own);
  EXPECT_EQ(only_shm.blobs.size(), 1u);
  EXPECT_EQ(only_shm.fds, std::vector<int>{10});
  EXPECT_EQ(DecodeShmBlob(only_shm.blobs.at("shm"), 1)->fd_index, 0u);

  own.device_fd = 11;  // a VMM fd without a device slice says nothing
  EXPECT_EQ(AdvertiseSlices(own).blobs.count("cuda"), 0u);
  own.device_size = 2u << 20;
  own.device_gpu = 1;
  own.paths["tcp"] = {"e", "h", "d"};
  auto all = AdvertiseSlices(own);
  EXPECT_EQ(all.fds, (std::vector<int>{10, 11}));
  auto cuda = DecodeCudaBlob(all.blobs.at("cuda"), 2);
  ASSERT_TRUE(cuda.ok());
  EXPECT_EQ(*cuda, (CudaSliceBlob{1, 2u << 20, 1}));
  EXPECT_EQ(*DecodePathBlob(all.blobs.at("tcp"), "tcp"), (PathSliceBlob{"e", "h", "d"}));
  EXPECT_TRUE(wire::CheckTransportBlobs(all.blobs).ok());

  // Over a tcp coordinator no descriptor travels: only the network path is advertised.
  OwnSlices remote = own;
  remote.host_fd = remote.device_fd = -1;
  auto tcp_only = AdvertiseSlices(remote);
  EXPECT_TRUE(tcp_only.fds.empty());
  EXPECT_EQ(tcp_only.blobs.size(), 1u);
  EXPECT_EQ(tcp_only.blobs.count("tcp"), 1u);
  // Without a network path there is nothing to advertise.
  remote.paths.clear();
  EXPECT_TRUE(AdvertiseSlices(remote).blobs.empty());
}

// A reader takes what it knows and leaves the rest: an unknown transport is skipped, a corrupt
// one is refused alone, an absent one is NOT_FOUND.
TEST(SliceBlobs, ReadPeerSlicesTakesEachTransportOnItsOwn) {
  wire::TransportBlobs blobs = {{"shm", "\x07 not a v1 blob"},
                                {"tcp", EncodePathBlob({"e", "h42", ""})},
                                {"future-rdma", "\x01 an rkey this build cannot read"}};
  PeerSliceBlobs read = ReadPeerSlices(blobs, 1, 0, "tcp");
  EXPECT_EQ(read.shm.status().code(), Code::kProtocol);
  EXPECT_NE(read.shm.status().message().find("shm"), std::string::npos) << read.shm.status().ToString();
  ASSERT_TRUE(read.path.ok()) << read.path.status().ToString();
  EXPECT_EQ(read.path->host_region, "h42");
  EXPECT_EQ(read.cuda.status().code(), Code::kNotFound);
  // The path read is the one this peer runs: another peer's extra path is not looked at.
  EXPECT_EQ(ReadPeerSlices(blobs, 1, 0, "ucx").path.status().code(), Code::kNotFound);
  EXPECT_EQ(ReadPeerSlices(blobs, 1, 0, "future-rdma").path.status().code(), Code::kProtocol);
  EXPECT_EQ(ReadPeerSlices(blobs, 1, 0, "").path.status().code(), Code::kNotFound);

  // A cuda blob describing another size than the join's device_size is not believed.
  blobs["cuda"] = EncodeCudaBlob({0, 4u << 20, 0});
  EXPECT_TRUE(ReadPeerSlices(blobs, 1, 4u << 20, "tcp").cuda.ok());
  auto mismatch = ReadPeerSlices(blobs, 1, 2u << 20, "tcp").cuda;
  EXPECT_EQ(mismatch.status().code(), Code::kProtocol);
  EXPECT_NE(mismatch.status().message().find("cuda"), std::string::npos) << mismatch.status().ToString();
}

}  // namespace
}  // namespace weft::bm
