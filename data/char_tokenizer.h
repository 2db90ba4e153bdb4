// The char tokenizer (nanoGPT's shakespeare_char): one id per distinct Unicode character of the corpus, in code
// point order, ids 0..n-1, and end-of-text n. The vocabulary is whatever the corpus contains, so it is built from
// the corpus (all of it, train and validation, as nanoGPT does: a character seen only in validation text must
// still be encodable). Text must be valid UTF-8; a character outside the vocabulary is an error, never mapped to
// a stand-in, so decode(encode(text)) == text whenever encode succeeds.
//
// Model file: {"format": "mlagpt.tokenizer", "version": 1, "type": "char", "code_points": [10, 32, ...],
// "vocab_size": n + 1, "eot_id": n}.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace mlagpt::data {

// Collects the characters of a corpus one text at a time, so a corpus need not be in memory at once.
class CharVocabularyBuilder {
 public:
  CharVocabularyBuilder();
  // Throws DataError "invalid UTF-8 at byte offset N (bytes ...)" for malformed text; nothing of it is added then.
  void add(std::string_view text);
  // DataError when no character was added (an empty corpus).
  std::unique_ptr<Tokenizer> build() const;

 private:
  std::vector<bool> seen_;  // indexed by code point
};

// The char tokenizer of `texts`; an invalid text is named by its index in the message.
std::unique_ptr<Tokenizer> build_char_tokenizer(const std::vector<std::string_view>& texts);

// Reads a model file written by a char tokenizer's save(); DataError naming the file when it is malformed.
std::unique_ptr<Tokenizer> load_char_tokenizer(const std::filesystem::path& file);

}  // namespace mlagpt::data
