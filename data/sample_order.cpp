#include "data/sample_order.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <utility>

#include "launch/error.h"

namespace mlagpt::data {
namespace {

// The splitmix64 finalizer: a fast 64-bit mixing function in which every input bit affects every output bit. It
// serves as the Feistel round function and to derive keys.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;  // 2^64 / phi, spreads consecutive integers apart

uint64_t low_bits(int bits) {
  return bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
}

// The permutation key of one epoch: distinct epochs (and seeds) give unrelated permutations.
uint64_t epoch_key(uint64_t seed, int64_t epoch) {
  return mix64(seed ^ mix64(static_cast<uint64_t>(epoch) * kGolden + 1));
}

}  // namespace

FeistelPermutation::FeistelPermutation(uint64_t size, uint64_t key) : size_(size) {
  MLAGPT_CHECK(size >= 1, "a permutation needs a non-empty domain");
  const int bits = std::max(2, static_cast<int>(std::bit_width(size - 1)));
  left_bits_ = bits / 2;
  right_bits_ = bits - left_bits_;
  for (int i = 0; i < kRounds; ++i) {
    round_keys_[static_cast<size_t>(i)] = mix64(key + static_cast<uint64_t>(i + 1) * kGolden);
  }
}

// One pass through the network. The halves may differ by a bit, so each round swaps their widths too: the new left
// half is the old right one, the new right half is the old left one XOR a keyed hash of the old right one, cut to
// the old left's width. Each round is invertible whatever the round function, hence so is the network; after an
// even number of rounds the widths are back where they started.
uint64_t FeistelPermutation::permute_domain(uint64_t x) const {
  int left_width = left_bits_;
  int right_width = right_bits_;
  uint64_t left = x >> right_width;
  uint64_t right = x & low_bits(right_width);
  for (const uint64_t round_key : round_keys_) {
    const uint64_t new_right = (left ^ mix64(right ^ round_key)) & low_bits(left_width);
    left = right;
    right = new_right;
    std::swap(left_width, right_width);
  }
  static_assert(kRounds % 2 == 0, "the half widths must end where they started");
  return (left << right_width) | right;
}

uint64_t FeistelPermutation::operator()(uint64_t index) const {
  MLAGPT_CHECK(index < size_, fmt::format("index {} is outside the permutation's domain of {}", index, size_));
  if (size_ == 1) {
    return 0;
  }
  uint64_t x = index;
  do {
    x = permute_domain(x);
  } while (x >= size_);
  return x;
}

int64_t windows_in_shard(int64_t num_tokens, int64_t seq_len) {
  return num_tokens > 0 ? (num_tokens - 1) / seq_len : 0;
}

SampleOrder::SampleOrder(const std::vector<int64_t>& shard_tokens, int64_t seq_len, uint64_t seed)
    : seq_len_(seq_len), seed_(seed) {
  if (seq_len < 1) {
    throw ConfigError(fmt::format("seq_len {} must be at least 1", seq_len));
  }
  first_window_.reserve(shard_tokens.size() + 1);
  for (const int64_t tokens : shard_tokens) {
    first_window_.push_back(num_windows_);
    num_windows_ += windows_in_shard(tokens, seq_len);
  }
  first_window_.push_back(num_windows_);
  if (num_windows_ == 0) {
    throw DataError(
        fmt::format("{} shard(s) hold no window of seq_len + 1 = {} tokens", shard_tokens.size(), seq_len + 1));
  }
}

Window SampleOrder::window(int64_t w) const {
  MLAGPT_CHECK(w >= 0 && w < num_windows_, fmt::format("window {} of {}", w, num_windows_));
  // The last shard whose first window is <= w; upper_bound skips shards that hold no window.
  const auto next = std::upper_bound(first_window_.begin(), first_window_.end(), w);
  const auto shard = static_cast<int64_t>(next - first_window_.begin()) - 1;
  return {shard, (w - first_window_[static_cast<size_t>(shard)]) * seq_len_};
}

int64_t SampleOrder::window_of_sample(int64_t g) const {
  MLAGPT_CHECK(g >= 0, fmt::format("global sample {} is negative", g));
  const int64_t epoch = g / num_windows_;
  const FeistelPermutation permutation(static_cast<uint64_t>(num_windows_), epoch_key(seed_, epoch));
  return static_cast<int64_t>(permutation(static_cast<uint64_t>(g % num_windows_)));
}

RankSlice rank_slice(int64_t position, int64_t rank_batch, int rank) {
  MLAGPT_CHECK(position >= 0 && rank_batch >= 1 && rank >= 0,
               fmt::format("position {}, rank batch {}, rank {}", position, rank_batch, rank));
  return {position + rank * rank_batch, rank_batch};
}

int64_t rank_batch_size(int64_t global_batch, int world_size) {
  if (global_batch < 1 || world_size < 1 || global_batch % world_size != 0) {
    throw ConfigError(fmt::format("global batch ({}) must be a positive multiple of the data-parallel world size ({})",
                                  global_batch, world_size));
  }
  return global_batch / world_size;
}

}  // namespace mlagpt::data
