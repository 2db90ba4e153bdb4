// The bpe tokenizer: a SentencePiece (0.1.97) BPE model trained on the corpus, set up so that any UTF-8 text
// round-trips exactly:
//   - normalization "identity", no dummy prefix, no whitespace folding: the text SentencePiece sees is the text;
//   - byte fallback: a character outside the vocabulary becomes its UTF-8 bytes (256 byte pieces), never <unk>;
//   - "<|endoftext|>" is a control symbol: it has an id but no surface, so no text ever encodes to it;
//   - SentencePiece writes a space as U+2581 ("▁") internally and decodes every U+2581 back to a space, so a
//     literal U+2581 in the text is encoded here as its three byte pieces, which decode to the character itself.
// Text is encoded line by line (each piece ends after a '\n'), the way the model was trained: SentencePiece's BPE
// encoder is several times faster on lines than on whole documents, and no learned piece spans a line break.
//
// Training is deterministic: the same texts and vocabulary size give a byte-identical model file. SentencePiece
// trains with one thread here: its BPE trainer gains nothing from more (measured: 2.0 s for 2.5 MB at vocab 4096
// with 1 or 2 threads), and it records the thread count in the model file, which would make the model's bytes and
// SHA-256 depend on the machine.
//
// Vocabulary: id 0 is <unk> (SentencePiece requires it; byte fallback means encode never produces it), id 1 is
// end-of-text, then the 256 byte pieces, then the learned pieces. The smallest useful size is therefore 259 plus
// the corpus's common characters; SentencePiece refuses sizes too small or too large for the corpus, and the error
// says which.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace mlagpt::data {

// The training corpus, one text (a document) at a time: fills `text` and returns true, or returns false after the
// last. Exceptions it throws propagate out of train_bpe_tokenizer.
using TextSource = std::function<bool(std::string& text)>;

// Trains on every line of every text. Throws ConfigError when vocab_size does not fit the corpus, DataError for a
// text that is not UTF-8 (naming its index and the byte offset).
std::unique_ptr<Tokenizer> train_bpe_tokenizer(const TextSource& texts, int64_t vocab_size);
std::unique_ptr<Tokenizer> train_bpe_tokenizer(const std::vector<std::string_view>& texts, int64_t vocab_size);

// Reads a SentencePiece model saved by a bpe tokenizer; DataError naming the file when it is not one, or when it
// is a SentencePiece model that does not round-trip text (one not trained by mlagpt).
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::filesystem::path& file);

}  // namespace mlagpt::data
