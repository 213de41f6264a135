// decompress(): gzip and zstd layers (image-spec media types `+gzip`, `+zstd`) or plain tars,
// told apart by their magic bytes.  The decoding is libarchive's: its gzip and zstd read
// filters over the "raw" format, which hands back the decompressed stream as a single entry.
#include <archive.h>
#include <archive_entry.h>

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

// Decompressed bytes of `in` through a libarchive read filter.
class FilterReader final : public Reader {
 public:
  FilterReader(std::unique_ptr<Reader> in, std::string what)
      : in_(std::move(in)), what_(std::move(what)) {}
  ~FilterReader() override {
    if (a_) archive_read_free(a_);
  }

  Result<void> open(Compression c) {
    a_ = archive_read_new();
    if (!a_)
      return Error(ErrorKind::kSystem, "decompress " + name() + ": archive_read_new failed",
                   ENOMEM);
    int r = c == Compression::kGzip ? archive_read_support_filter_gzip(a_)
                                    : archive_read_support_filter_zstd(a_);
    // ARCHIVE_WARN means "supported through an external program", which we do not want.
    if (r != ARCHIVE_OK)
      return Error::not_supported("decompress " + name() + ": libarchive has no built-in " + what_ +
                                  " decoder");
    archive_read_support_format_raw(a_);
    if (archive_read_open(a_, this, nullptr, &FilterReader::read_cb, nullptr) != ARCHIVE_OK)
      return failure();
    struct archive_entry* entry = nullptr;
    int h = archive_read_next_header(a_, &entry);
    if (h != ARCHIVE_OK && h != ARCHIVE_WARN && h != ARCHIVE_EOF) return failure();
    // The magic matched, but libarchive's bidder also checks the rest of the header; when it
    // declines, the raw format would hand back the compressed bytes unchanged.
    int expected = c == Compression::kGzip ? ARCHIVE_FILTER_GZIP : ARCHIVE_FILTER_ZSTD;
    if (archive_filter_count(a_) < 2 || archive_filter_code(a_, 0) != expected)
      return Error::invalid("decompress " + name() + ": corrupt " + what_ + " stream: bad header");
    eof_ = h == ARCHIVE_EOF;
    return {};
  }

  Result<size_t> read(void* buf, size_t len) override {
    if (eof_ || len == 0) return size_t{0};
    la_ssize_t n = archive_read_data(a_, buf, len);
    if (n < 0) return failure();
    if (n == 0) eof_ = true;
    return static_cast<size_t>(n);
  }
  std::string name() const override { return in_->name(); }

 private:
  static la_ssize_t read_cb(struct archive* a, void* self_ptr, const void** out) {
    auto* self = static_cast<FilterReader*>(self_ptr);
    auto n = self->in_->read(self->buf_.data(), self->buf_.size());
    if (!n.ok()) {
      self->input_error_ = std::move(n).error();
      archive_set_error(a, EIO, "input error");
      return -1;
    }
    *out = self->buf_.data();
    return static_cast<la_ssize_t>(*n);
  }

  Error failure() {
    if (input_error_) return *input_error_;
    const char* msg = archive_error_string(a_);
    return Error::invalid("decompress " + name() + ": corrupt " + what_ +
                          " stream: " + (msg ? msg : "unknown libarchive error"));
  }

  std::unique_ptr<Reader> in_;
  std::string what_;
  struct archive* a_ = nullptr;
  std::array<char, kChunk> buf_{};
  std::optional<Error> input_error_;
  bool eof_ = false;
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
    case Compression::kGzip:
    case Compression::kZstd: {
      auto f = std::make_unique<FilterReader>(std::move(replay),
                                              c == Compression::kGzip ? "gzip" : "zstd");
      COWLAB_TRY(f->open(c));
      return std::unique_ptr<Reader>(std::move(f));
    }
  }
  return Error::invalid("decompress: unreachable compression kind");
}

}  // namespace cowlab
