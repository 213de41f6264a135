// SHA-256 digests in OCI form ("sha256:<64 hex>").
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "cowlab/result.h"

namespace cowlab {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t len);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // "sha256:<hex>"; the hasher may not be used afterwards.
  std::string finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string sha256_digest(std::string_view data);
// True for "sha256:" followed by 64 lowercase hex digits.
bool is_valid_digest(std::string_view digest);
// OCI ChainID: ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(n)).
std::string chain_id(std::string_view parent_chain_id, std::string_view diff_id);

}  // namespace cowlab
