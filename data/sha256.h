// SHA-256 through OpenSSL's EVP interface: checksums of tokenizer models and shards in dataset.json, and the
// seeded document hash that splits a corpus into train and validation.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

// OpenSSL's context type, declared here so that users of this header need not include OpenSSL's.
struct evp_md_ctx_st;

namespace mlagpt::data {

using Sha256Digest = std::array<uint8_t, 32>;

// An incremental SHA-256. Not thread-safe; use one per thread.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Sha256& update(std::string_view bytes);
  // Returns the digest of everything passed to update() since construction or the last finish(), and starts over.
  Sha256Digest finish();

 private:
  evp_md_ctx_st* context_;
};

// Lower-case hex, 64 characters.
std::string to_hex(const Sha256Digest& digest);
std::string sha256_hex(std::string_view bytes);
// Of a file's bytes, read in blocks; throws IoError naming the file when it cannot be read.
std::string sha256_file_hex(const std::filesystem::path& path);

}  // namespace mlagpt::data
