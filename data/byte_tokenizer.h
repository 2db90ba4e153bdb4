// The byte tokenizer: token i < 256 is the byte value i, token 256 is end-of-text. It accepts any bytes, needs no
// training, and its model file only records that it is one (so it too has a SHA-256 for the shards to carry).
#pragma once

#include <filesystem>
#include <memory>

#include "data/tokenizer.h"

namespace mlagpt::data {

inline constexpr int32_t kByteEotId = 256;

std::unique_ptr<Tokenizer> make_byte_tokenizer();
// Reads a model file written by make_byte_tokenizer()->save(); DataError when it is anything else.
std::unique_ptr<Tokenizer> load_byte_tokenizer(const std::filesystem::path& file);

}  // namespace mlagpt::data
