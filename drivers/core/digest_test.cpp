// SHA-256 digests, ChainIDs and the byte streams: known vectors (FIPS 180-2 "abc" and the empty
// string), the image-spec ChainID formula, DigestReader's accounting, FdReader/FdWriter and
// open_reader.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/tar_test_util.h"
#include "cowlab/archive.h"
#include "cowlab/digest.h"
#include "cowlab/io.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

TEST(Digest, KnownVectors) {
  EXPECT_EQ(sha256_digest(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // The same bytes fed in uneven pieces.
  Sha256 h;
  std::string million(1000000, 'x');
  for (size_t i = 0; i < million.size(); i += 4093)
    h.update(million.data() + i, std::min<size_t>(4093, million.size() - i));
  EXPECT_EQ(h.finish(), "sha256:1b977e9f84f1b26b6ed7f68b0498faee2385ea4125bd29adce4a7d9106ba3134");
}

TEST(Digest, Validity) {
  EXPECT_TRUE(is_valid_digest(sha256_digest("x")));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(63, 'a')));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(65, 'a')));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(is_valid_digest("sha512:" + std::string(64, 'a')));
  EXPECT_FALSE(is_valid_digest(std::string(64, 'a')));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(63, 'a') + "g"));
}

TEST(Digest, ChainIdFollowsTheImageSpec) {
  const std::string a = "sha256:" + std::string(64, 'a'), b = "sha256:" + std::string(64, 'b');
  EXPECT_EQ(chain_id("", a), a) << "ChainID(L0) = DiffID(L0)";
  // sha256("sha256:aaa…a sha256:bbb…b"), computed independently.
  EXPECT_EQ(chain_id(a, b),
            "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
  EXPECT_EQ(chain_id(chain_id("", a), b), chain_id(a, b));
  EXPECT_NE(chain_id(b, a), chain_id(a, b));
}

using testing::TrickleReader;

TEST(Digest, DigestReaderHashesEverythingReadAndTheRestOnDrain) {
  std::string data(100000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  TrickleReader in(data, 333);
  DigestReader d(in);
  char buf[1000];
  auto n = d.read(buf, sizeof buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 333u);
  EXPECT_EQ(d.bytes(), 333u);
  EXPECT_EQ(d.name(), "trickle");
  auto digest = d.drain_and_digest();
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(*digest, sha256_digest(data));
  EXPECT_EQ(d.bytes(), data.size());
  EXPECT_EQ(*d.drain_and_digest(), *digest) << "asking again gives the same digest";
}

// Past the first few MiB the hashing moves to a second thread through a bounded queue; the
// digest must not depend on that, nor on read sizes that straddle the 1 MiB chunk edges, and a
// reader dropped mid-stream must stop its thread (no hang, no leak under ASan).
TEST(Digest, DigestReaderLargeStreamsHashOnASecondThreadWithTheSameResult) {
  std::string data(23 * (1 << 20) + 12345, '\0');
  uint32_t x = 2463534242u;
  for (auto& c : data) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;  // xorshift32: incompressible, reproducible
    c = static_cast<char>(x);
  }
  for (size_t step : {size_t{65536}, size_t{1000003}, size_t{7}}) {
    if (step == 7) data.resize(5 * (1 << 20) + 3);  // keep the 7-byte reads quick
    TrickleReader in(data, step);
    DigestReader d(in);
    auto digest = d.drain_and_digest();
    ASSERT_TRUE(digest.ok());
    EXPECT_EQ(*digest, sha256_digest(data)) << "read size " << step;
    EXPECT_EQ(d.bytes(), data.size());
  }
  {
    TrickleReader in(data, 1 << 16);
    DigestReader abandoned(in);
    std::vector<char> buf(1 << 16);
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(abandoned.read(buf.data(), buf.size()).ok());
  }
}

TEST(Digest, FdStreamsAndOpenReader) {
  testing::TempRoot t;
  std::string path = t.path() + "/f";
  {
    auto fd = sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(fd.ok());
    FdWriter w(fd->release(), path, /*owned=*/true);
    ASSERT_TRUE(w.write("hello ", 6).ok());
    ASSERT_TRUE(w.write("world", 5).ok());
    EXPECT_EQ(w.name(), path);
  }
  auto r = open_reader(path);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ((*r)->name(), path);
  std::string got;
  char buf[4];
  for (;;) {
    auto n = (*r)->read(buf, sizeof buf);
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
    got.append(buf, *n);
  }
  EXPECT_EQ(got, "hello world");
  auto missing = open_reader(t.path() + "/missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().err(), ENOENT);
  EXPECT_NE(missing.error().message().find("missing"), std::string::npos);
  auto stdin_reader = open_reader("-");
  ASSERT_TRUE(stdin_reader.ok());
  // A read error names the stream.
  FdReader bad(-1, "broken.tar");
  auto e = bad.read(buf, sizeof buf);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("broken.tar"), std::string::npos) << e.error().message();
}

}  // namespace
}  // namespace cowlab
