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
// Train/val split: a document goes to val when u < val_fraction, u in [0, 1) being the first 8 bytes of
// SHA-256(seed as 8 little-endian bytes || document bytes) read as a big-endian integer over 2^64. It depends on
// the document's content only, so adding or removing other documents never moves a document, and duplicate
// documents always land in the same split. With val_fraction > 0 each split gets at least one document: when
// hashing leaves val empty, the last document moves to val; when it leaves train empty, the first moves to train.
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
