// SHA-256 through OpenSSL's EVP interface (the one OpenSSL 3 keeps un-deprecated), and the
// DigestReader that layer imports use to compute DiffIDs and compressed digests on the fly.
#include "cowlab/digest.h"
#include "cowlab/diag.h"

#include <openssl/evp.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "cowlab/archive.h"

namespace cowlab {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
  ~Impl() {
    if (ctx) EVP_MD_CTX_free(ctx);
  }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  // Allocation failure or a FIPS provider without SHA-256 leaves nothing sensible to do: every
  // digest in the store would be wrong, so stop here rather than return a fake digest.
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1) {
    diag::error("cowlab: OpenSSL cannot initialise SHA-256");
    std::abort();
  }
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t len) {
  if (len > 0) EVP_DigestUpdate(impl_->ctx, data, len);
}

std::string Sha256::finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  out.reserve(7 + 2 * n);
  for (unsigned i = 0; i < n; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

std::string sha256_digest(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.finish();
}

bool is_valid_digest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.size() != kPrefix.size() + 64 || digest.substr(0, kPrefix.size()) != kPrefix)
    return false;
  for (char c : digest.substr(kPrefix.size()))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// image-spec config.md: ChainID(L0) = DiffID(L0); ChainID(L0|...|Ln) =
// Digest(ChainID(L0|...|Ln-1) + " " + DiffID(Ln)).
std::string chain_id(std::string_view parent_chain_id, std::string_view diff_id) {
  if (parent_chain_id.empty()) return std::string(diff_id);
  std::string text;
  text.reserve(parent_chain_id.size() + 1 + diff_id.size());
  text.append(parent_chain_id).append(" ").append(diff_id);
  return sha256_digest(text);
}

// ---- DigestReader -----------------------------------------------------------------------------
// Hashing a 200 MB layer costs ~0.1-0.2 s of CPU, as much as extracting it; with two cores the
// hash runs beside the extraction. Bytes are gathered into 1 MiB chunks; the first chunks are
// hashed inline (small layers never start a thread), later ones go through a queue of at most
// kMaxQueued chunks to a hasher thread, so memory stays bounded when hashing falls behind.
namespace {
constexpr size_t kChunkBytes = 1 << 20;
constexpr size_t kInlineChunks = 4;
constexpr size_t kMaxQueued = 8;
}  // namespace

struct DigestReader::Hash {
  Sha256 sha;
  std::string digest;  // set once drain_and_digest() has finished the hash
  std::vector<char> pending;
  size_t chunks = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<char>> queue;
  bool closing = false;
  std::thread worker;

  ~Hash() { stop(); }

  void add(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    pending.insert(pending.end(), p, p + n);
    if (pending.size() >= kChunkBytes) flush();
  }
  void flush() {
    if (pending.empty()) return;
    if (++chunks <= kInlineChunks) {
      sha.update(pending.data(), pending.size());
      pending.clear();
      return;
    }
    if (!worker.joinable()) worker = std::thread([this] { run(); });
    std::vector<char> chunk;
    chunk.reserve(kChunkBytes + (1 << 16));
    chunk.swap(pending);
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return queue.size() < kMaxQueued; });
    queue.push_back(std::move(chunk));
    cv.notify_all();
  }
  void run() {
    for (;;) {
      std::vector<char> chunk;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return closing || !queue.empty(); });
        if (queue.empty()) return;
        chunk = std::move(queue.front());
        queue.pop_front();
        cv.notify_all();
      }
      sha.update(chunk.data(), chunk.size());
    }
  }
  // Waits until every queued chunk is hashed and the thread has ended.
  void stop() {
    if (!worker.joinable()) return;
    {
      std::lock_guard lock(mu);
      closing = true;
    }
    cv.notify_all();
    worker.join();
  }
  std::string finish() {
    flush();
    stop();
    return sha.finish();
  }
};

DigestReader::DigestReader(Reader& inner) : inner_(inner), hash_(std::make_unique<Hash>()) {}
DigestReader::~DigestReader() = default;

Result<size_t> DigestReader::read(void* buf, size_t len) {
  size_t n = COWLAB_TRY(inner_.read(buf, len));
  if (hash_->digest.empty()) hash_->add(buf, n);
  bytes_ += n;
  return n;
}

std::string DigestReader::name() const {
  return inner_.name();
}

Result<std::string> DigestReader::drain_and_digest() {
  if (!hash_->digest.empty()) return hash_->digest;
  std::vector<char> buf(1 << 16);
  for (;;) {
    size_t n = COWLAB_TRY(read(buf.data(), buf.size()));
    if (n == 0) break;
  }
  hash_->digest = hash_->finish();
  return hash_->digest;
}

}  // namespace cowlab
