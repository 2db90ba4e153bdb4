// Token shards: the files `mlagpt prepare` writes and the loader reads (docs/design.md, "File formats").
//
//   /tokens       1-D, uint16 when vocab_size <= 65536 else uint32, CONTIGUOUS layout (see below)
//   /doc_offsets  1-D uint64: the index in /tokens where each document of the shard starts
//   attributes    format = "mlagpt.tokens", version = 1, vocab_size, eot_id, tokenizer, tokenizer_sha256,
//                 num_tokens
//
// /tokens is contiguous rather than chunked: a shard is written once with its size known, and a contiguous dataset
// has one file offset (H5Dget_offset), so the reader maps the file and serves every window of tokens with a plain
// memory read instead of an H5Dread call (~10 us of selection overhead each, which would cap the loader far
// below its target at T = 1024). h5py and h5dump read it like any dataset.
//
// ShardWriter writes to `<path>.tmp-<pid>` and renames onto `path` only in finish(): a crash leaves no file at
// `path`. ShardReader validates everything it relies on when it opens a shard and throws DataError/IoError naming
// the file and the problem: not HDF5, wrong format or version, missing or mistyped datasets, num_tokens disagreeing
// with /tokens, a truncated file (the token bytes must lie inside the file), and, on demand, token ids >= vocab_size.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace mlagpt::data {

inline constexpr const char* kShardFormat = "mlagpt.tokens";
inline constexpr int64_t kShardVersion = 1;

struct ShardInfo {
  int64_t vocab_size = 0;
  int64_t eot_id = 0;
  std::string tokenizer;         // "byte", "char" or "bpe"
  std::string tokenizer_sha256;  // of the saved tokenizer model, hex
};

// Bytes per token in a shard of this vocabulary: 2 (uint16) up to 65536 ids, else 4 (uint32).
int64_t token_bytes(int64_t vocab_size);

class ShardWriter {
 public:
  // `num_tokens` and `num_docs` are known before writing (prepare tokenizes first); tokens are appended in order.
  ShardWriter(std::filesystem::path path, const ShardInfo& info, int64_t num_tokens, int64_t num_docs);
  ~ShardWriter();  // removes the temporary file unless finish() succeeded
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends a document's tokens (ids checked against vocab_size) and records where it starts.
  void add_document(std::span<const int32_t> tokens);
  // Checks that exactly num_tokens and num_docs were written, flushes, fsyncs and renames into place.
  void finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

class ShardReader {
 public:
  // Opens and validates `path` (see above); maps the token bytes read-only.
  explicit ShardReader(const std::filesystem::path& path);
  ~ShardReader();
  ShardReader(ShardReader&&) noexcept;
  ShardReader& operator=(ShardReader&&) noexcept;

  const std::filesystem::path& path() const;
  const ShardInfo& info() const;
  int64_t num_tokens() const;
  const std::vector<uint64_t>& doc_offsets() const;

  // Copies tokens [start, start + out.size()) into `out` as int64 (bounds-checked; thread-safe: a pure read).
  // Throws DataError naming the file, position and id of a token >= vocab_size.
  void read(int64_t start, std::span<int64_t> out) const;
  // Scans every token (a full pass) and throws DataError naming the file, position and id of the first token
  // >= vocab_size.
  void check_token_range() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mlagpt::data
