// dataset.json: the manifest `mlagpt prepare` writes last into a dataset directory, and what a reader opens first.
//
//   {"format": "mlagpt.dataset", "version": 1,
//    "options":   {"inputs": [absolute file paths], "tokenizer": "bpe", "vocab_size": 4096, "seed": 1337,
//                  "val_fraction": 0.1, "shard_tokens": 100000000, "split_on_percent": true},
//    "tokenizer": {"name": "bpe", "file": "tokenizer.model", "sha256": "...", "vocab_size": 4096, "eot_id": 1},
//    "train": {"num_docs": N, "num_tokens": N, "text_bytes": N,
//              "shards": [{"file": "train_00000.h5", "num_tokens": N, "num_docs": N, "sha256": "..."}, ...]},
//    "val":   {...}}
//
// "options" are what define the dataset: the same options on unchanged input files give byte-identical shards
// (the thread count is not among them). A shard's "num_docs" counts its /doc_offsets entries: the documents, and
// the piece of a document continued from the previous shard, that start in it. A split's "num_docs" counts whole
// documents. Nothing in the manifest depends on time or machine except the input paths.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mlagpt::data {

inline constexpr const char* kDatasetFormat = "mlagpt.dataset";
inline constexpr int64_t kDatasetVersion = 1;
inline constexpr const char* kManifestName = "dataset.json";

struct DatasetOptions {
  std::vector<std::string> inputs;  // the files read, in order
  std::string tokenizer;
  int64_t vocab_size = 0;  // asked for (bpe); 0 when the tokenizer fixes it
  uint64_t seed = 0;
  double val_fraction = 0;
  int64_t shard_tokens = 0;
  bool split_on_percent = false;

  bool operator==(const DatasetOptions&) const = default;
};

// "seed (1 there, 2 here)", one entry per option that differs; `there` is the existing dataset.
std::vector<std::string> option_differences(const DatasetOptions& there, const DatasetOptions& here);

struct TokenizerRecord {
  std::string name;
  std::string file;  // inside the dataset directory
  std::string sha256;
  int64_t vocab_size = 0;
  int64_t eot_id = 0;
};

struct ShardRecord {
  std::string file;  // inside the dataset directory
  int64_t num_tokens = 0;
  int64_t num_docs = 0;
  std::string sha256;
};

struct SplitRecord {
  int64_t num_docs = 0;
  int64_t num_tokens = 0;
  int64_t text_bytes = 0;
  std::vector<ShardRecord> shards;
};

struct DatasetManifest {
  DatasetOptions options;
  TokenizerRecord tokenizer;
  SplitRecord train;
  SplitRecord val;
};

// The manifest as JSON text (keys sorted, two-space indent, final newline).
std::string manifest_json(const DatasetManifest& manifest);
// Parses and checks a manifest; DataError naming `file` and the first field that is missing or mistyped.
DatasetManifest parse_manifest(const std::filesystem::path& file, const std::string& json);
// Reads DIR/dataset.json: IoError when it is missing, DataError when it is malformed.
DatasetManifest read_dataset_manifest(const std::filesystem::path& dir);

}  // namespace mlagpt::data
