// `mlagpt prepare`: text files -> tokenizer + token shards + dataset.json (docs/design.md, "Data flow" and
// "File formats").
//
//   1. Resolve the inputs (corpus.h); with none, the default corpus (the fortune files, split on "%" lines).
//   2. Refuse an output directory that holds a different dataset (options differ) unless `force`. The same options
//      again rebuild the dataset in place: the result is byte-identical when the input files are unchanged.
//   3. Scan every document once: assign it to train or val, check it (UTF-8 for char and bpe), collect the char
//      vocabulary. Nothing is written before this pass succeeds, so bad input leaves the directory untouched.
//   4. Build the tokenizer: byte; char from every document; bpe trained on the train documents (at most
//      kMaxBpeTrainingBytes of them, a seeded sample when there are more) so no validation text shapes it.
//   5. Clear the directory of a previous dataset (manifest first, then shards and tokenizer), save the tokenizer,
//      tokenize in parallel, and write the shards of each split (split_writer.h).
//   6. Write dataset.json last (temporary name, fsync, rename): a manifest only ever lists complete shards.
//
// Train/val split, with val_fraction > 0:
//   - A long document (kLongDocumentBytes or more: a book, a whole text file) is split inside: its last
//     val_fraction of bytes, from the first line start at or after that point, is a val document, the rest a train
//     document (failing a line start there, the last one before it; failing any, a character boundary).
//   - A single-document input (one text file, the way nanoGPT and char-rnn users start) is split the same way,
//     whatever its length: its tail is the val split.
//   - Any other document goes to val whole when u < val_fraction, u in [0, 1) being the first 8 bytes of
//     SHA-256(seed as 8 little-endian bytes || document bytes) read as a big-endian integer over 2^64.
// Both rules depend on the document's content only, so adding or removing other documents never moves a document
// or a tail, and duplicate documents always land in the same split. Each split gets at least one document: when
// nothing went to val, the last document moves there; when nothing went to train, the first moves there. The bpe
// tokenizer is trained on train text only, the head of a split document included and its tail not.
//
// Determinism: documents are tokenized in parallel but placed by their index, so the shards, the tokenizer and
// dataset.json are byte-identical whatever `threads` is.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "data/dataset_manifest.h"

namespace mlagpt::data {

// Documents of at least this many bytes are split inside into a train head and a val tail (see above).
inline constexpr int64_t kLongDocumentBytes = int64_t{64} << 10;

// BPE training reads at most this much text (SentencePiece keeps all of it in memory, several times over).
inline constexpr int64_t kMaxBpeTrainingBytes = int64_t{256} << 20;

struct PrepareConfig {
  std::vector<std::string> inputs;  // files, directories or globs; empty: the default corpus
  std::string tokenizer;            // "byte", "char" or "bpe"
  int64_t vocab_size = 0;           // bpe only, and required there
  std::filesystem::path out;
  int64_t shard_tokens = 100'000'000;
  double val_fraction = 0.1;
  uint64_t seed = 1337;
  int threads = 0;  // 0: all cores
  bool force = false;
  bool split_on_percent = false;  // fortune format for plain-text inputs; always on for the default corpus
  std::filesystem::path default_corpus = kDefaultCorpusDir;

  // Throws ConfigError naming the flag and the value of the first bad option.
  void validate() const;
};

struct PrepareReport {
  DatasetManifest manifest;
  std::filesystem::path manifest_path;
  int64_t text_bytes = 0;        // of all documents
  int threads = 0;               // used for tokenization
  double seconds = 0;            // the whole run
  double tokenizer_seconds = 0;  // building or training the tokenizer
  double tokenize_seconds = 0;   // tokenizing and writing the shards
};

PrepareReport prepare_dataset(const PrepareConfig& config);

// "train 1,234 docs, 567,890 tokens in 1 shard; val ..." and the throughput, for the command line.
std::string describe(const PrepareReport& report);

}  // namespace mlagpt::data
