#include "data/byte_tokenizer.h"

#include <fmt/format.h>

#include "data/file_io.h"
#include "data/tokenizer_json.h"
#include "launch/error.h"

namespace mlagpt::data {
namespace {

constexpr int64_t kByteVocabSize = 257;

class ByteTokenizer final : public Tokenizer {
 public:
  // `model_bytes`: what save() writes; a loaded model keeps its file's bytes so that sha256() is the file's.
  explicit ByteTokenizer(std::string model_bytes) : Tokenizer(std::move(model_bytes)) {}

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
      ids[i] = static_cast<unsigned char>(text[i]);
    }
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const int32_t id = ids[i];
      if (id == kByteEotId) {
        text += kEndOfTextText;
      } else if (id >= 0 && id < kByteEotId) {
        text += static_cast<char>(id);
      } else {
        throw DataError(fmt::format("byte tokenizer: token id {} at position {} is outside the vocabulary of {}", id, i,
                                    kByteVocabSize));
      }
    }
    return text;
  }

  int64_t vocab_size() const override { return kByteVocabSize; }
  int32_t eot_id() const override { return kByteEotId; }
  std::string name() const override { return "byte"; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() {
  return std::make_unique<ByteTokenizer>(tokenizer_json_bytes(tokenizer_json("byte", kByteVocabSize, kByteEotId)));
}

std::unique_ptr<Tokenizer> load_byte_tokenizer(const std::filesystem::path& file) {
  const std::string bytes = read_file(file);
  const nlohmann::json model = parse_tokenizer_json(file, bytes, "byte");
  const int64_t vocab_size = tokenizer_json_int(file, model, "vocab_size");
  const int64_t eot_id = tokenizer_json_int(file, model, "eot_id");
  if (vocab_size != kByteVocabSize || eot_id != kByteEotId) {
    throw DataError(fmt::format("{}: byte tokenizer with vocab_size {} and eot_id {} (expected {} and {})",
                                file.string(), vocab_size, eot_id, kByteVocabSize, kByteEotId));
  }
  return std::make_unique<ByteTokenizer>(bytes);
}

}  // namespace mlagpt::data
