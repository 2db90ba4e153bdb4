#include "data/tokenizer.h"

#include <fmt/format.h>

#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/char_tokenizer.h"
#include "data/file_io.h"
#include "data/sha256.h"
#include "data/tokenizer_json.h"
#include "launch/error.h"

namespace mlagpt::data {

Tokenizer::Tokenizer(std::string model_bytes)
    : model_bytes_(std::move(model_bytes)), sha256_(sha256_hex(model_bytes_)) {}

void Tokenizer::save(const std::filesystem::path& dir) const {
  write_file_atomically(dir / tokenizer_file_name(name()), model_bytes_);
}

std::string tokenizer_file_name(std::string_view name) {
  if (name == "byte" || name == "char") {
    return "tokenizer.json";
  }
  if (name == "bpe") {
    return "tokenizer.model";
  }
  throw ConfigError(fmt::format("tokenizer '{}' is not one of {}", name, fmt::join(kTokenizerNames, ", ")));
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir, std::string_view name) {
  const std::filesystem::path file = dir / tokenizer_file_name(name);
  if (name == "byte") {
    return load_byte_tokenizer(file);
  }
  if (name == "char") {
    return load_char_tokenizer(file);
  }
  return load_bpe_tokenizer(file);
}

// ---- the JSON model files ------------------------------------------------------------------------------------

namespace {

// A string member, or "" when it is missing or not a string (json::value would throw for a non-string).
std::string string_member(const nlohmann::json& object, const char* key) {
  return object.contains(key) && object[key].is_string() ? object[key].get<std::string>() : std::string();
}

}  // namespace

nlohmann::json tokenizer_json(std::string_view type, int64_t vocab_size, int64_t eot_id) {
  return {{"format", kTokenizerFormat},
          {"version", kTokenizerVersion},
          {"type", type},
          {"vocab_size", vocab_size},
          {"eot_id", eot_id}};
}

std::string tokenizer_json_bytes(const nlohmann::json& model) {
  return model.dump() + "\n";
}

nlohmann::json parse_tokenizer_json(const std::filesystem::path& file, const std::string& bytes,
                                    std::string_view type) {
  nlohmann::json model;
  try {
    model = nlohmann::json::parse(bytes);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt::format("{}: not a tokenizer model (not JSON: {})", file.string(), e.what()));
  }
  if (!model.is_object() || string_member(model, "format") != kTokenizerFormat) {
    throw DataError(fmt::format("{}: not a tokenizer model (format is not \"{}\")", file.string(), kTokenizerFormat));
  }
  if (tokenizer_json_int(file, model, "version") != kTokenizerVersion) {
    throw DataError(fmt::format("{}: tokenizer model version {} (this mlagpt reads version {})", file.string(),
                                model["version"].dump(), kTokenizerVersion));
  }
  if (string_member(model, "type") != type) {
    throw DataError(fmt::format("{}: a tokenizer model of type {}, expected \"{}\"", file.string(),
                                model.contains("type") ? model["type"].dump() : "(none)", type));
  }
  return model;
}

int64_t tokenizer_json_int(const std::filesystem::path& file, const nlohmann::json& model, const char* key) {
  if (!model.contains(key) || !model[key].is_number_integer()) {
    throw DataError(fmt::format("{}: tokenizer model has no integer \"{}\"", file.string(), key));
  }
  return model[key].get<int64_t>();
}

}  // namespace mlagpt::data
