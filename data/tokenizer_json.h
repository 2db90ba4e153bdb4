// The JSON model files of the byte and char tokenizers (internal to data/):
//   {"format": "mlagpt.tokenizer", "version": 1, "type": "char", "vocab_size": ..., "eot_id": ..., ...}
// nlohmann's objects keep their keys sorted, so the same model always serializes to the same bytes and the same
// SHA-256.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace mlagpt::data {

inline constexpr std::string_view kTokenizerFormat = "mlagpt.tokenizer";
inline constexpr int64_t kTokenizerVersion = 1;

// A model object with format, version, type, vocab_size and eot_id filled in.
nlohmann::json tokenizer_json(std::string_view type, int64_t vocab_size, int64_t eot_id);

// The bytes of a model file: compact JSON and a newline.
std::string tokenizer_json_bytes(const nlohmann::json& model);

// Parses a model file and checks format, version and type; throws DataError naming the file otherwise.
nlohmann::json parse_tokenizer_json(const std::filesystem::path& file, const std::string& bytes, std::string_view type);

// An integer member of a parsed model; throws DataError naming the file and key when it is missing or not one.
int64_t tokenizer_json_int(const std::filesystem::path& file, const nlohmann::json& model, const char* key);

}  // namespace mlagpt::data
