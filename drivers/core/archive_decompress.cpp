// decompress(): gzip and zstd layers (image-spec media types `+gzip`, `+zstd`) or plain tars,
// told apart by their magic bytes.  The decoding is zlib's and libzstd's, each stream
// verified to its end (trailer, checksum, no truncation, nothing after it).
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

#include "cowlab/archive.h"

namespace cowlab {

namespace {

constexpr size_t kChunk = 1 << 16;

// RFC 1952 (gzip: 1f 8b), RFC 8878 (zstd frame: 28 b5 2f fd); xz and bzip2 are recognised
// only to say clearly that OCI layers do not use them.
Compression sniff(const unsigned char* p, size_t n) {
  if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b) return Compression::kGzip;
  if (n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd)
    return Compression::kZstd;
  if (n >= 6 && std::memcmp(p,
                            "\xfd"
                            "7zXZ\0",
                            6) == 0)
    return Compression::kXz;
  if (n >= 3 && std::memcmp(p, "BZh", 3) == 0) return Compression::kBzip2;
  return Compression::kNone;
}

// The bytes read while sniffing, then the rest of the stream.
class ReplayReader final : public Reader {
 public:
  ReplayReader(std::unique_ptr<Reader> in, std::string head)
      : in_(std::move(in)), head_(std::move(head)) {}
  Result<size_t> read(void* buf, size_t len) override {
    if (pos_ < head_.size()) {
      size_t n = std::min(len, head_.size() - pos_);
      std::memcpy(buf, head_.data() + pos_, n);
      pos_ += n;
      return n;
    }
    return in_->read(buf, len);
  }
  std::string name() const override { return in_->name(); }

 private:
  std::unique_ptr<Reader> in_;
  std::string head_;
  size_t pos_ = 0;
};

// gzip (RFC 1952) through zlib: inflate() with gzip framing checks each member's CRC-32 and
// ISIZE trailer (Z_DATA_ERROR on a mismatch), which libarchive's gzip filter does not do —
// a layer with a wrong CRC used to import with wrong content.  Concatenated members are one
// stream (RFC 1952 2.2; gzip(1) and Go's gzip.Reader read them all).  A stream that ends
// inside a member is truncated and refused.
class GzipReader final : public Reader {
 public:
  explicit GzipReader(std::unique_ptr<Reader> in) : in_(std::move(in)) {}
  ~GzipReader() override {
    if (init_) inflateEnd(&z_);
  }
  Result<void> open() {
    z_ = {};
    if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK)
      return Error(ErrorKind::kSystem, "decompress " + name() + ": inflateInit2 failed", ENOMEM);
    init_ = true;
    return {};
  }
  Result<size_t> read(void* buf, size_t len) override {
    if (done_ || len == 0) return size_t{0};
    const uInt want = static_cast<uInt>(std::min<size_t>(len, 1u << 30));
    z_.next_out = static_cast<Bytef*>(buf);
    z_.avail_out = want;
    while (z_.avail_out == want) {
      if (z_.avail_in == 0) {
        size_t n =
            COWLAB_TRY_CTX(in_->read(in_buf_.data(), in_buf_.size()), "decompress " + name());
        if (n == 0) {
          if (in_member_)
            return bad(
                "truncated gzip stream (it ends inside a member, before its CRC-32 trailer)");
          done_ = true;
          break;
        }
        z_.next_in = reinterpret_cast<Bytef*>(in_buf_.data());
        z_.avail_in = static_cast<uInt>(n);
      }
      if (!in_member_) {
        // Bytes after a member: another member (1f 8b), else trailing garbage.
        if (z_.next_in[0] != 0x1f) return bad("trailing bytes after the gzip stream");
        in_member_ = true;
      }
      int r = inflate(&z_, Z_NO_FLUSH);
      if (r == Z_STREAM_END) {
        in_member_ = false;
        inflateReset(&z_);
        continue;
      }
      if (r == Z_BUF_ERROR && z_.avail_in == 0) continue;  // needs more input
      if (r != Z_OK)
        return bad(std::string("corrupt gzip stream: ") + (z_.msg ? z_.msg : zError(r)));
    }
    return static_cast<size_t>(static_cast<Bytef*>(z_.next_out) - static_cast<Bytef*>(buf));
  }
  std::string name() const override { return in_->name(); }

 private:
  Error bad(const std::string& why) { return Error::invalid("decompress " + name() + ": " + why); }
  std::unique_ptr<Reader> in_;
  z_stream z_{};
  bool init_ = false, in_member_ = false, done_ = false;
  std::array<char, kChunk> in_buf_{};
};

// zstd (RFC 8878) through libzstd's streaming decoder: every frame's content checksum, when
// the frame has one, is verified by the library; a stream that ends inside a frame (the
// decoder still wants input) is truncated and refused.
class ZstdReader final : public Reader {
 public:
  explicit ZstdReader(std::unique_ptr<Reader> in) : in_(std::move(in)) {}
  ~ZstdReader() override {
    if (d_) ZSTD_freeDStream(d_);
  }
  Result<void> open() {
    d_ = ZSTD_createDStream();
    if (!d_)
      return Error(ErrorKind::kSystem, "decompress " + name() + ": ZSTD_createDStream failed",
                   ENOMEM);
    // Layers come from strangers: bound the window (zstd's default limit, 128 MiB), as
    // containerd and the zstd CLI do, so a frame cannot demand gigabytes of memory.
    ZSTD_DCtx_setParameter(d_, ZSTD_d_windowLogMax, 27);
    return {};
  }
  Result<size_t> read(void* buf, size_t len) override {
    if (done_ || len == 0) return size_t{0};
    ZSTD_outBuffer out{buf, len, 0};
    while (out.pos == 0) {
      if (ib_.pos == ib_.size) {
        size_t n =
            COWLAB_TRY_CTX(in_->read(in_buf_.data(), in_buf_.size()), "decompress " + name());
        if (n == 0) {
          if (pending_ != 0) return bad("truncated zstd stream (it ends inside a frame)");
          done_ = true;
          break;
        }
        ib_ = {in_buf_.data(), n, 0};
      }
      size_t r = ZSTD_decompressStream(d_, &out, &ib_);
      if (ZSTD_isError(r)) return bad(std::string("corrupt zstd stream: ") + ZSTD_getErrorName(r));
      pending_ = r;
    }
    return out.pos;
  }
  std::string name() const override { return in_->name(); }

 private:
  Error bad(const std::string& why) { return Error::invalid("decompress " + name() + ": " + why); }
  std::unique_ptr<Reader> in_;
  ZSTD_DStream* d_ = nullptr;
  ZSTD_inBuffer ib_{nullptr, 0, 0};
  size_t pending_ = 0;  // ZSTD_decompressStream's hint: 0 = at a frame boundary
  bool done_ = false;
  std::array<char, kChunk> in_buf_{};
};

}  // namespace

Result<std::unique_ptr<Reader>> decompress(std::unique_ptr<Reader> in, Compression* detected) {
  // Read until the longest magic (6 bytes) is in hand or the stream ends: read() may return
  // fewer bytes than asked for (pipes).
  std::string head(6, '\0');
  size_t have = 0;
  while (have < head.size()) {
    size_t n = COWLAB_TRY_CTX(in->read(head.data() + have, head.size() - have),
                              "decompress " + in->name());
    if (n == 0) break;
    have += n;
  }
  head.resize(have);
  Compression c = sniff(reinterpret_cast<const unsigned char*>(head.data()), head.size());
  if (detected) *detected = c;
  auto replay = std::make_unique<ReplayReader>(std::move(in), std::move(head));
  switch (c) {
    case Compression::kNone:
      return std::unique_ptr<Reader>(std::move(replay));
    case Compression::kXz:
    case Compression::kBzip2:
      return Error::not_supported(
          "decompress " + replay->name() + ": " + (c == Compression::kXz ? "xz" : "bzip2") +
          " compression is not an OCI layer media type (gzip, zstd or none)");
    case Compression::kGzip: {
      auto f = std::make_unique<GzipReader>(std::move(replay));
      COWLAB_TRY(f->open());
      return std::unique_ptr<Reader>(std::move(f));
    }
    case Compression::kZstd: {
      auto f = std::make_unique<ZstdReader>(std::move(replay));
      COWLAB_TRY(f->open());
      return std::unique_ptr<Reader>(std::move(f));
    }
  }
  return Error::invalid("decompress: unreachable compression kind");
}

}  // namespace cowlab
