// decompress(): gzip and zstd layers (written here with libarchive's own compressors) and plain
// tars, told apart by magic; corrupt and unsupported streams; the DiffID/compressed-digest pair
// the layer store computes with two DigestReaders around decompress and apply_layer.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "core/tar_test_util.h"
#include "cowlab/archive.h"
#include "cowlab/digest.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

using testing::make_tar;
using testing::TempRoot;
using testing::TrickleReader;

enum class Codec { kGzip, kZstd };

std::string compress(const std::string& data, Codec codec) {
  std::string out;
  struct archive* a = archive_write_new();
  EXPECT_EQ(
      codec == Codec::kGzip ? archive_write_add_filter_gzip(a) : archive_write_add_filter_zstd(a),
      ARCHIVE_OK);
  archive_write_set_format_raw(a);
  archive_write_set_bytes_in_last_block(a, 1);
  archive_write_open(
      a, &out, nullptr,
      [](struct archive*, void* ud, const void* buf, size_t n) -> la_ssize_t {
        static_cast<std::string*>(ud)->append(static_cast<const char*>(buf), n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_write_header(a, e);
  archive_write_data(a, data.data(), data.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

Result<std::string> read_all(Reader& r) {
  std::string out;
  char buf[7000];
  for (;;) {
    size_t n = COWLAB_TRY(r.read(buf, sizeof buf));
    if (n == 0) return out;
    out.append(buf, n);
  }
}

std::string sample_tar() {
  std::string big(300000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) ^ (i >> 7));
  return make_tar({{"dir", 'd'}, {"dir/big", 'f', big}, {"small", 'f', "hi"}});
}

class ArchiveDecompress : public ::testing::TestWithParam<Codec> {};

TEST_P(ArchiveDecompress, RoundTripsAndFeedsTheApplier) {
  std::string tar = sample_tar();
  std::string packed = compress(tar, GetParam());
  ASSERT_NE(packed, tar);
  auto plain = decompress(std::make_unique<StringReader>(packed, "layer"));
  ASSERT_TRUE(plain.ok()) << plain.error().message();
  auto back = read_all(**plain);
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(*back, tar);

  // The layer store's arrangement: digest of the raw stream, decompress, digest of the tar.
  TempRoot t;
  TrickleReader in(packed, 1000, "layer.tar.gz");
  DigestReader raw(in);
  auto unpacked = decompress(std::make_unique<BorrowedReader>(raw));
  ASSERT_TRUE(unpacked.ok()) << unpacked.error().message();
  DigestReader diff(**unpacked);
  ApplyOptions o;
  auto stats = apply_layer(t.dir("root"), diff, o);
  ASSERT_TRUE(stats.ok()) << stats.error().message();
  EXPECT_EQ(*diff.drain_and_digest(), sha256_digest(tar))
      << "DiffID is the digest of the uncompressed tar";
  EXPECT_EQ(*raw.drain_and_digest(), sha256_digest(packed));
  EXPECT_EQ(raw.bytes(), packed.size());
  EXPECT_EQ(*sys::read_file(t.path() + "/root/small"), "hi");
}

// Structural damage is caught here; payload bytes flipped inside a stored block or a literal
// run decode "fine" (libarchive does not check gzip's CRC32), which is what the digests of the
// compressed blob and of the tar (DiffID) are for.
TEST_P(ArchiveDecompress, DamagedAndTruncatedStreamsAreInvalid) {
  std::string packed = compress(sample_tar(), GetParam());
  std::string bad_header = packed.substr(0, 4) + std::string(300, '\xff');
  for (const std::string& bad :
       {bad_header, packed.substr(0, packed.size() / 2), packed.substr(0, 20)}) {
    auto plain = decompress(std::make_unique<StringReader>(bad, "bad-layer"));
    Result<std::string> all = plain.ok() ? read_all(**plain) : Result<std::string>(plain.error());
    ASSERT_FALSE(all.ok()) << "a damaged stream decompressed without error";
    EXPECT_EQ(all.error().kind(), ErrorKind::kInvalid) << all.error().message();
    EXPECT_NE(all.error().message().find("bad-layer"), std::string::npos) << all.error().message();
  }
}

// Issue 11 item 8: a gzip layer with a wrong CRC-32 imported with wrong content (libarchive's
// gzip filter does not check the trailer); trailing garbage and a missing trailer too.
TEST(ArchiveDecompressStrict, GzipTrailerIsVerified) {
  std::string packed = compress(sample_tar(), Codec::kGzip);
  ASSERT_GT(packed.size(), 8u);
  std::string bad_crc = packed;
  bad_crc[bad_crc.size() - 8] ^= 0x01;
  std::string bad_size = packed;
  bad_size[bad_size.size() - 4] ^= 0x01;
  std::string no_trailer = packed.substr(0, packed.size() - 8);
  std::string garbage = packed + "garbage";
  for (const auto& [what, bad] : std::vector<std::pair<std::string, std::string>>{
           {"crc", bad_crc}, {"isize", bad_size}, {"no trailer", no_trailer}, {"garbage", garbage}}) {
    SCOPED_TRACE(what);
    auto plain = decompress(std::make_unique<StringReader>(bad, "layer.tgz"));
    Result<std::string> all = plain.ok() ? read_all(**plain) : Result<std::string>(plain.error());
    ASSERT_FALSE(all.ok()) << "accepted";
    EXPECT_EQ(all.error().kind(), ErrorKind::kInvalid);
    EXPECT_NE(all.error().message().find("layer.tgz"), std::string::npos) << all.error().message();
  }
  // Two members are one stream (gzip(1), Go's multistream reader).
  std::string half1 = sample_tar().substr(0, 1024), half2 = sample_tar().substr(1024);
  auto two = decompress(std::make_unique<StringReader>(compress(half1, Codec::kGzip) + compress(half2, Codec::kGzip)));
  ASSERT_TRUE(two.ok());
  auto all = read_all(**two);
  ASSERT_TRUE(all.ok()) << all.error().message();
  EXPECT_EQ(*all, sample_tar());
}

TEST(ArchiveDecompressStrict, ZstdChecksumAndFrameEndAreVerified) {
  std::string plain = sample_tar();
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  std::string packed(ZSTD_compressBound(plain.size()), '\0');
  size_t n = ZSTD_compress2(c, packed.data(), packed.size(), plain.data(), plain.size());
  ZSTD_freeCCtx(c);
  ASSERT_FALSE(ZSTD_isError(n));
  packed.resize(n);
  std::string bad_sum = packed;
  bad_sum[bad_sum.size() - 1] ^= 0x01;
  std::string cut = packed.substr(0, packed.size() - 4);
  for (const auto& bad : {bad_sum, cut}) {
    auto r = decompress(std::make_unique<StringReader>(bad, "layer.tzst"));
    Result<std::string> all = r.ok() ? read_all(**r) : Result<std::string>(r.error());
    ASSERT_FALSE(all.ok()) << "accepted";
    EXPECT_EQ(all.error().kind(), ErrorKind::kInvalid);
  }
  auto good = decompress(std::make_unique<StringReader>(packed));
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*read_all(**good), plain);
}

INSTANTIATE_TEST_SUITE_P(Codecs, ArchiveDecompress, ::testing::Values(Codec::kGzip, Codec::kZstd),
                         [](const auto& info) {
                           return info.param == Codec::kGzip ? "Gzip" : "Zstd";
                         });

TEST(ArchiveDecompressPlain, UncompressedAndTinyStreamsPassThrough) {
  for (const std::string& data :
       {sample_tar(), std::string(), std::string("ab"), std::string("\x1f")}) {
    auto plain = decompress(std::make_unique<TrickleReader>(data, 1, "layer.tar.gz"));
    ASSERT_TRUE(plain.ok()) << plain.error().message();
    auto back = read_all(**plain);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, data);
  }
}

TEST(ArchiveDecompressPlain, XzAndBzip2AreNotOciMediaTypes) {
  for (const std::string& magic : {std::string("\xfd"
                                               "7zXZ\0rest",
                                               10),
                                   std::string("BZh91AY&SY")}) {
    auto r = decompress(std::make_unique<StringReader>(magic, "layer.tar.xz"));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind(), ErrorKind::kNotSupported) << r.error().message();
    EXPECT_NE(r.error().message().find("layer.tar.xz"), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace cowlab
