// Writes one split (train or val) of a dataset as token shards: DIR/<split>_00000.h5, <split>_00001.h5, ...
//
// The split is one stream of tokens: every document followed by end-of-text. It is cut into shards of exactly
// shard_tokens tokens (the last one shorter), so documents may cross shard boundaries: the loader samples
// windows of tokens, not documents, and full shards keep every shard the same size. A document's piece that
// continues in the next shard starts at offset 0 there and gets a /doc_offsets entry, so every shard's
// doc_offsets begins with 0 and every token belongs to the entry before it.
//
// Holds at most one shard of tokens in memory (as int32) and writes each shard with ShardWriter as soon as it is
// full (temporary name, fsync, rename: a crash leaves no partial shard). Single-threaded, like HDF5.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "data/dataset_manifest.h"
#include "data/token_shard.h"

namespace mlagpt::data {

// "train_00003.h5"
std::string shard_file_name(const std::string& split, int64_t index);

class SplitWriter {
 public:
  SplitWriter(std::filesystem::path dir, std::string split, ShardInfo info, int64_t shard_tokens);

  // Appends a document's tokens and an end-of-text token, writing any shard that fills up.
  void add_document(std::span<const int32_t> tokens, int64_t text_bytes);
  // Writes the last, partly filled shard and returns what was written. An empty split writes no shard.
  SplitRecord finish();

 private:
  void write_shard();

  std::filesystem::path dir_;
  std::string split_;
  ShardInfo info_;
  int64_t shard_tokens_;
  std::vector<int32_t> pending_;      // the tokens of the shard being filled
  std::vector<size_t> piece_starts_;  // where each document (or piece of one) starts in pending_
  SplitRecord record_;
};

}  // namespace mlagpt::data
