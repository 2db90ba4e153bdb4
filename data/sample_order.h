// The global order in which training samples are visited, and which of them each data-parallel rank takes.
//
// A sample is a window of T+1 consecutive tokens inside one shard (x = its first T tokens, y = its last T). Shard k
// of n_k tokens holds floor((n_k - 1) / T) windows starting at 0, T, 2T, ...: they do not overlap as x, and the y of
// one window ends where the x of the next one begins, so every token but a shard's short tail is a target once per
// epoch. The windows of all shards are numbered 0 .. M-1 in shard order.
//
// Global sample g (0, 1, 2, ...) is window perm_e(g mod M) of epoch e = g / M, where perm_e is a keyed pseudo-
// random permutation of [0, M) fixed by (seed, e). The permutation is a Feistel network: a bijection computed in
// O(1) time and memory per index, so
//   - nothing of size M is stored (a corpus of 10^12 tokens at T = 1024 has ~10^9 windows: an explicit shuffled
//     index would take 8 GB on every rank, and would have to be rebuilt or stored for every epoch);
//   - any sample is found directly from its number, so the loader's whole state is the global sample counter g:
//     resuming means seeking to g, with no RNG state to save and no replay of the samples before it;
//   - every rank computes the same order on its own, without communication.
//
// Data parallelism: with a global batch of G = B x R samples per step, rank r of R takes global samples
// [p + r B, p + (r+1) B) of the step that starts at sample p, and the next step starts at p + G. The counter p is
// the same on every rank, so a job resumed with another R (and the same G) continues the same global stream.
//
// Everything here is pure arithmetic on integers: thread-safe, no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace mlagpt::data {

// A pseudo-random permutation of [0, size) chosen by `key`: a Feistel network on n-bit integers, n the smallest
// bit count with 2^n >= size (at least 2, so that both halves have a bit), restricted to [0, size) by cycle
// walking: an index whose image lands outside [0, size) is permuted again until it lands inside. Because the
// network is a bijection of [0, 2^n), following its cycles this way is a bijection of [0, size). 2^n is at most
// twice `size` (for size >= 2), so the expected number of network evaluations per index is at most 2.
class FeistelPermutation {
 public:
  FeistelPermutation(uint64_t size, uint64_t key);
  uint64_t size() const { return size_; }
  // The image of `index`; index < size().
  uint64_t operator()(uint64_t index) const;

 private:
  static constexpr int kRounds = 6;
  uint64_t permute_domain(uint64_t x) const;
  uint64_t size_;
  int left_bits_ = 0;
  int right_bits_ = 0;
  std::array<uint64_t, kRounds> round_keys_{};
};

// The tokens [start, start + T + 1) of shard `shard`.
struct Window {
  int64_t shard = 0;
  int64_t start = 0;
  bool operator==(const Window&) const = default;
};

// Number of windows of T+1 tokens a shard of `num_tokens` tokens contributes: floor((num_tokens - 1) / T), or 0.
int64_t windows_in_shard(int64_t num_tokens, int64_t seq_len);

class SampleOrder {
 public:
  // `shard_tokens[k]` is the number of tokens of shard k. Throws ConfigError for seq_len < 1 and DataError when the
  // shards hold no window at all.
  SampleOrder(const std::vector<int64_t>& shard_tokens, int64_t seq_len, uint64_t seed);

  int64_t seq_len() const { return seq_len_; }
  // M: the windows of all shards, the samples of one epoch.
  int64_t num_windows() const { return num_windows_; }
  // Window w (0 <= w < M) in shard order, unshuffled (what the validation pass walks).
  Window window(int64_t w) const;
  // The window number global sample g (>= 0) visits: perm_{g / M}(g mod M).
  int64_t window_of_sample(int64_t g) const;
  Window sample(int64_t g) const { return window(window_of_sample(g)); }

 private:
  int64_t seq_len_;
  uint64_t seed_;
  std::vector<int64_t> first_window_;  // first_window_[k]: number of shard k's first window; one more at the end
  int64_t num_windows_ = 0;
};

// The global samples one rank takes in one step: [first, first + count).
struct RankSlice {
  int64_t first = 0;
  int64_t count = 0;
};

// Rank `rank`'s share of the step that starts at global sample `position`, `rank_batch` (B) samples per rank.
RankSlice rank_slice(int64_t position, int64_t rank_batch, int rank);

// B = G / R for a global batch G split over R data-parallel ranks; throws ConfigError naming both when R does not
// divide G (or either is not positive).
int64_t rank_batch_size(int64_t global_batch, int world_size);

}  // namespace mlagpt::data
