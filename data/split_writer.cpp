#include "data/split_writer.h"

#include <fmt/format.h>

#include <algorithm>

#include "data/sha256.h"

namespace mlagpt::data {

std::string shard_file_name(const std::string& split, int64_t index) {
  return fmt::format("{}_{:05d}.h5", split, index);
}

SplitWriter::SplitWriter(std::filesystem::path dir, std::string split, ShardInfo info, int64_t shard_tokens)
    : dir_(std::move(dir)), split_(std::move(split)), info_(std::move(info)), shard_tokens_(shard_tokens) {}

void SplitWriter::add_document(std::span<const int32_t> tokens, int64_t text_bytes) {
  const int32_t eot = static_cast<int32_t>(info_.eot_id);
  const size_t total = tokens.size() + 1;  // the document and its end-of-text
  size_t done = 0;
  while (done < total) {
    const size_t room = static_cast<size_t>(shard_tokens_) - pending_.size();
    const size_t take = std::min(room, total - done);
    piece_starts_.push_back(pending_.size());
    const size_t from_document = std::min(take, tokens.size() - std::min(done, tokens.size()));
    pending_.insert(pending_.end(), tokens.begin() + static_cast<ptrdiff_t>(done),
                    tokens.begin() + static_cast<ptrdiff_t>(done + from_document));
    if (from_document < take) {
      pending_.push_back(eot);  // the end-of-text is the last token of the document
    }
    done += take;
    if (pending_.size() == static_cast<size_t>(shard_tokens_)) {
      write_shard();
    }
  }
  record_.num_docs += 1;
  record_.num_tokens += static_cast<int64_t>(total);
  record_.text_bytes += text_bytes;
}

SplitRecord SplitWriter::finish() {
  if (!pending_.empty()) {
    write_shard();
  }
  return record_;
}

void SplitWriter::write_shard() {
  const std::string name = shard_file_name(split_, static_cast<int64_t>(record_.shards.size()));
  const std::filesystem::path path = dir_ / name;
  ShardWriter writer(path, info_, static_cast<int64_t>(pending_.size()), static_cast<int64_t>(piece_starts_.size()));
  for (size_t i = 0; i < piece_starts_.size(); ++i) {
    const size_t end = i + 1 < piece_starts_.size() ? piece_starts_[i + 1] : pending_.size();
    writer.add_document(std::span<const int32_t>(pending_).subspan(piece_starts_[i], end - piece_starts_[i]));
  }
  writer.finish();
  record_.shards.push_back(
      {name, static_cast<int64_t>(pending_.size()), static_cast<int64_t>(piece_starts_.size()), sha256_file_hex(path)});
  pending_.clear();
  piece_starts_.clear();
}

}  // namespace mlagpt::data
