#include "data/char_tokenizer.h"

#include <fmt/format.h>

#include "data/file_io.h"
#include "data/tokenizer_json.h"
#include "data/utf8.h"
#include "launch/error.h"

namespace mlagpt::data {
namespace {

constexpr char32_t kCodePointLimit = 0x110000;

std::string model_bytes_of(const std::vector<char32_t>& code_points) {
  nlohmann::json model =
      tokenizer_json("char", static_cast<int64_t>(code_points.size()) + 1, static_cast<int64_t>(code_points.size()));
  model["code_points"] = nlohmann::json::array();
  for (const char32_t code_point : code_points) {
    model["code_points"].push_back(static_cast<uint32_t>(code_point));
  }
  return tokenizer_json_bytes(model);
}

class CharTokenizer final : public Tokenizer {
 public:
  // `model_bytes`: what save() writes; a loaded model keeps its file's bytes so that sha256() is the file's.
  CharTokenizer(std::vector<char32_t> code_points, std::string model_bytes)
      : Tokenizer(std::move(model_bytes)), code_points_(std::move(code_points)) {
    // A dense table up to the largest code point: one lookup per character. At most 4.4 MB (a corpus with a
    // character near U+10FFFF); for ASCII-and-Latin corpora a few hundred bytes.
    id_of_.assign(static_cast<size_t>(code_points_.back()) + 1, -1);
    for (size_t id = 0; id < code_points_.size(); ++id) {
      id_of_[code_points_[id]] = static_cast<int32_t>(id);
    }
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    size_t offset = 0;
    while (offset < text.size()) {
      const size_t start = offset;
      const char32_t code_point = next_code_point(text, offset);
      const int32_t id = code_point < id_of_.size() ? id_of_[code_point] : -1;
      if (id < 0) {
        throw DataError(fmt::format(
            "char tokenizer: character {} at byte offset {} is not in its vocabulary (the {} characters of the "
            "corpus it was built from)",
            describe_code_point(code_point), start, code_points_.size()));
      }
      ids.push_back(id);
    }
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const int32_t id = ids[i];
      if (id == eot_id()) {
        text += kEndOfTextText;
      } else if (id >= 0 && id < eot_id()) {
        append_utf8(text, code_points_[static_cast<size_t>(id)]);
      } else {
        throw DataError(fmt::format("char tokenizer: token id {} at position {} is outside the vocabulary of {}", id, i,
                                    vocab_size()));
      }
    }
    return text;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(code_points_.size()) + 1; }
  int32_t eot_id() const override { return static_cast<int32_t>(code_points_.size()); }
  std::string name() const override { return "char"; }

 private:
  std::vector<char32_t> code_points_;  // sorted; the id of a character is its index here
  std::vector<int32_t> id_of_;         // code point -> id, -1 when not in the vocabulary
};

}  // namespace

CharVocabularyBuilder::CharVocabularyBuilder() : seen_(kCodePointLimit, false) {}

void CharVocabularyBuilder::add(std::string_view text) {
  // Validate first so that a malformed text adds nothing.
  check_utf8(text);
  size_t offset = 0;
  while (offset < text.size()) {
    seen_[next_code_point(text, offset)] = true;
  }
}

std::unique_ptr<Tokenizer> CharVocabularyBuilder::build() const {
  std::vector<char32_t> code_points;
  for (char32_t code_point = 0; code_point < kCodePointLimit; ++code_point) {
    if (seen_[code_point]) {
      code_points.push_back(code_point);
    }
  }
  if (code_points.empty()) {
    throw DataError("char tokenizer: the corpus has no characters to build a vocabulary from");
  }
  std::string model_bytes = model_bytes_of(code_points);
  return std::make_unique<CharTokenizer>(std::move(code_points), std::move(model_bytes));
}

std::unique_ptr<Tokenizer> build_char_tokenizer(const std::vector<std::string_view>& texts) {
  CharVocabularyBuilder builder;
  for (size_t i = 0; i < texts.size(); ++i) {
    try {
      builder.add(texts[i]);
    } catch (const DataError& e) {
      throw DataError(fmt::format("char tokenizer: text {}: {}", i, e.what()));
    }
  }
  return builder.build();
}

std::unique_ptr<Tokenizer> load_char_tokenizer(const std::filesystem::path& file) {
  const std::string bytes = read_file(file);
  const nlohmann::json model = parse_tokenizer_json(file, bytes, "char");
  const nlohmann::json* list = model.contains("code_points") ? &model["code_points"] : nullptr;
  if (list == nullptr || !list->is_array() || list->empty()) {
    throw DataError(fmt::format("{}: char tokenizer model has no \"code_points\" list", file.string()));
  }
  std::vector<char32_t> code_points;
  for (const nlohmann::json& item : *list) {
    const bool is_code_point =
        item.is_number_unsigned() && item.get<uint64_t>() < kCodePointLimit && is_scalar_value(item.get<uint32_t>());
    if (!is_code_point || (!code_points.empty() && item.get<uint32_t>() <= code_points.back())) {
      throw DataError(fmt::format("{}: \"code_points\" item {} ({}) is not a code point in increasing order",
                                  file.string(), code_points.size(), item.dump()));
    }
    code_points.push_back(item.get<uint32_t>());
  }
  const auto n = static_cast<int64_t>(code_points.size());
  const int64_t vocab_size = tokenizer_json_int(file, model, "vocab_size");
  const int64_t eot_id = tokenizer_json_int(file, model, "eot_id");
  if (vocab_size != n + 1 || eot_id != n) {
    throw DataError(
        fmt::format("{}: char tokenizer with {} characters must have vocab_size {} and eot_id {}, not {} "
                    "and {}",
                    file.string(), n, n + 1, n, vocab_size, eot_id));
  }
  return std::make_unique<CharTokenizer>(std::move(code_points), bytes);
}

}  // namespace mlagpt::data
