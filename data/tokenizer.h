// Tokenizers: text to token ids and back. Three kinds, chosen by name:
//   byte  the 256 byte values plus end-of-text (vocab 257); any bytes round-trip.
//   char  the distinct Unicode characters of a corpus, sorted by code point, plus end-of-text (nanoGPT's
//         shakespeare_char); text must be UTF-8 and use only those characters.
//   bpe   a SentencePiece BPE model trained on the corpus, with byte fallback: any UTF-8 text round-trips.
//
// Every tokenizer has an end-of-text id that encode() never produces from text (not even from the text
// "<|endoftext|>"): `prepare` appends it after every document. decode() writes it as "<|endoftext|>". For any text
// a tokenizer accepts, decode(encode(text)) == text, byte for byte.
//
// A tokenizer is saved as one model file in the dataset directory (tokenizer_file_name()); sha256() is the hex
// SHA-256 of exactly the bytes save() writes, recorded in every shard and in dataset.json so a reader can tell
// which tokenizer its tokens came from. encode() and decode() are const and safe to call from several threads.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mlagpt::data {

// What decode() writes for the end-of-text id.
inline constexpr std::string_view kEndOfTextText = "<|endoftext|>";

inline constexpr std::array<std::string_view, 3> kTokenizerNames = {"byte", "char", "bpe"};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Throws DataError (naming the byte offset and what is wrong) for text this tokenizer cannot represent.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Throws DataError for an id outside [0, vocab_size()).
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t eot_id() const = 0;
  // "byte", "char" or "bpe".
  virtual std::string name() const = 0;

  // Writes the model file into `dir` (which must exist) under a temporary name and renames it into place.
  void save(const std::filesystem::path& dir) const;
  // The hex SHA-256 of the model file's bytes.
  std::string sha256() const { return sha256_; }
  // The exact bytes save() writes.
  const std::string& model_bytes() const { return model_bytes_; }

 protected:
  explicit Tokenizer(std::string model_bytes);

 private:
  std::string model_bytes_;
  std::string sha256_;
};

// The model file of tokenizer `name` inside a dataset directory: "tokenizer.json" (byte, char) or
// "tokenizer.model" (bpe, a SentencePiece model that SentencePiece's own tools open). ConfigError for other names.
std::string tokenizer_file_name(std::string_view name);

// Loads the tokenizer `name` saved in `dir`. Throws ConfigError for an unknown name, IoError for a missing file,
// DataError for a file that is not a model of that kind.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir, std::string_view name);

}  // namespace mlagpt::data
