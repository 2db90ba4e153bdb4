#include "data/sha256.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "launch/error.h"

namespace mlagpt::data {
namespace {

void check_openssl(int ok, const char* call) {
  if (ok != 1) {
    throw BackendError(fmt::format("OpenSSL {} failed while computing a SHA-256", call));
  }
}

}  // namespace

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (context_ == nullptr) {
    throw BackendError("OpenSSL EVP_MD_CTX_new failed (out of memory?)");
  }
  check_openssl(EVP_DigestInit_ex(context_, EVP_sha256(), nullptr), "EVP_DigestInit_ex");
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(context_);
}

Sha256& Sha256::update(std::string_view bytes) {
  check_openssl(EVP_DigestUpdate(context_, bytes.data(), bytes.size()), "EVP_DigestUpdate");
  return *this;
}

Sha256Digest Sha256::finish() {
  Sha256Digest digest{};
  unsigned int length = 0;
  check_openssl(EVP_DigestFinal_ex(context_, digest.data(), &length), "EVP_DigestFinal_ex");
  check_openssl(EVP_DigestInit_ex(context_, EVP_sha256(), nullptr), "EVP_DigestInit_ex");
  return digest;
}

std::string to_hex(const Sha256Digest& digest) {
  std::string hex;
  hex.reserve(2 * digest.size());
  for (const uint8_t byte : digest) {
    hex += fmt::format("{:02x}", byte);
  }
  return hex;
}

std::string sha256_hex(std::string_view bytes) {
  return to_hex(Sha256().update(bytes).finish());
}

std::string sha256_file_hex(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw IoError(fmt::format("{}: cannot open to compute its SHA-256: {}", path.string(), std::strerror(errno)));
  }
  Sha256 hash;
  std::vector<char> block(1 << 20);
  while (file) {
    file.read(block.data(), static_cast<std::streamsize>(block.size()));
    hash.update(std::string_view(block.data(), static_cast<size_t>(file.gcount())));
  }
  if (file.bad()) {
    throw IoError(fmt::format("{}: read error while computing its SHA-256", path.string()));
  }
  return to_hex(hash.finish());
}

}  // namespace mlagpt::data
