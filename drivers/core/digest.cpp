// SHA-256 through OpenSSL's EVP interface (the one OpenSSL 3 keeps un-deprecated), and the
// DigestReader that layer imports use to compute DiffIDs and compressed digests on the fly.
#include "cowlab/digest.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
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
    std::fprintf(stderr, "cowlab: OpenSSL cannot initialise SHA-256\n");
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
struct DigestReader::Hash {
  Sha256 sha;
  std::string digest;  // set once drain_and_digest() has finished the hash
};

DigestReader::DigestReader(Reader& inner) : inner_(inner), hash_(std::make_unique<Hash>()) {}
DigestReader::~DigestReader() = default;

Result<size_t> DigestReader::read(void* buf, size_t len) {
  size_t n = COWLAB_TRY(inner_.read(buf, len));
  if (hash_->digest.empty()) hash_->sha.update(buf, n);
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
  hash_->digest = hash_->sha.finish();
  return hash_->digest;
}

}  // namespace cowlab
