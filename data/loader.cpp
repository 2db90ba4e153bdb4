#include "data/loader.h"

#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "launch/error.h"

namespace mlagpt::data {

// ---- ShardSet ---------------------------------------------------------------------------------------------------

class ShardSet {
 public:
  ShardSet(const std::vector<std::filesystem::path>& paths, int64_t seq_len, uint64_t seed)
      : readers_(open(paths, seq_len)), order_(token_counts(readers_), seq_len, seed) {}

  const SampleOrder& order() const { return order_; }
  const ShardInfo& info() const { return readers_.front().info(); }

  // Writes window `w` as one row of x (tokens [start, start + T)) and of y (tokens [start + 1, start + T + 1)).
  void read_window(const Window& w, int64_t* x_row, int64_t* y_row) const {
    const ShardReader& reader = readers_[static_cast<size_t>(w.shard)];
    const auto T = static_cast<size_t>(order_.seq_len());
    // y is x shifted by one: widen the T tokens once, copy T - 1 of them, and widen only the last token of y.
    reader.read(w.start, std::span<int64_t>(x_row, T));
    std::memcpy(y_row, x_row + 1, (T - 1) * sizeof(int64_t));
    reader.read(w.start + static_cast<int64_t>(T), std::span<int64_t>(y_row + T - 1, 1));
  }

 private:
  static std::vector<ShardReader> open(const std::vector<std::filesystem::path>& paths, int64_t seq_len) {
    if (paths.empty()) {
      throw ConfigError("data: the list of token shards is empty");
    }
    std::vector<ShardReader> readers;
    readers.reserve(paths.size());
    for (const auto& path : paths) {
      ShardReader reader(path);
      if (reader.num_tokens() < seq_len + 1) {
        throw DataError(fmt::format("{}: {} tokens, fewer than seq_len + 1 = {}: the shard holds no training window",
                                    path.string(), reader.num_tokens(), seq_len + 1));
      }
      if (!readers.empty()) {
        require_same(readers.front(), reader);
      }
      readers.push_back(std::move(reader));
    }
    return readers;
  }

  // All shards of a stream must speak the same vocabulary: token ids mean nothing across tokenizers.
  static void require_same(const ShardReader& first, const ShardReader& other) {
    const ShardInfo& a = first.info();
    const ShardInfo& b = other.info();
    const auto differ = [&](const char* field, const auto& value_a, const auto& value_b) {
      return DataError(fmt::format("{}: {} is {}, but {}: {} is {}; all shards of a dataset must agree",
                                   other.path().string(), field, value_b, first.path().string(), field, value_a));
    };
    if (a.vocab_size != b.vocab_size) {
      throw differ("vocab_size", a.vocab_size, b.vocab_size);
    }
    if (a.tokenizer != b.tokenizer) {
      throw differ("tokenizer", a.tokenizer, b.tokenizer);
    }
    if (a.tokenizer_sha256 != b.tokenizer_sha256) {
      throw differ("tokenizer_sha256", a.tokenizer_sha256, b.tokenizer_sha256);
    }
  }

  static std::vector<int64_t> token_counts(const std::vector<ShardReader>& readers) {
    std::vector<int64_t> counts;
    counts.reserve(readers.size());
    for (const auto& reader : readers) {
      counts.push_back(reader.num_tokens());
    }
    return counts;
  }

  std::vector<ShardReader> readers_;
  SampleOrder order_;
};

namespace {

// The settings TokenLoader and ValidationPass share.
void validate(const LoaderConfig& c) {
  if (c.batch_size < 1) {
    throw ConfigError(fmt::format("data: batch_size {} must be at least 1", c.batch_size));
  }
  if (c.seq_len < 1) {
    throw ConfigError(fmt::format("data: seq_len {} must be at least 1", c.seq_len));
  }
  if (c.world_size < 1 || c.rank < 0 || c.rank >= c.world_size) {
    throw ConfigError(fmt::format("data: rank {} is not in [0, world_size {})", c.rank, c.world_size));
  }
  if (c.device.is_cuda()) {
    if (!at::hasCUDA()) {
      throw ConfigError(fmt::format("data: device {} requested, but CUDA is not available", c.device.str()));
    }
  } else if (!c.device.is_cpu()) {
    throw ConfigError(fmt::format("data: device {} is not supported (cpu or cuda)", c.device.str()));
  }
}

// Host buffers of the batches for a CPU target, reused once nothing outside the pool refers to them: a fresh
// allocation per batch is cache-cold and cost the loader about 30% of its speed (loader_bench). Only for a CPU target:
// a pinned buffer may still be the source of an asynchronous copy after its tensor is dropped (the CUDA host allocator,
// which at::empty uses for pinned memory, tracks that). Used by the producer thread only.
class BatchPool {
 public:
  explicit BatchPool(size_t capacity) : capacity_(capacity) {}

  // Two [rows, T] int64 tensors that nobody else holds: recycled from the pool when one is free, else new.
  Batch get(int64_t rows, int64_t T) {
    for (const Batch& batch : batches_) {
      if (unused(batch.x) && unused(batch.y) && batch.x.size(0) == rows && batch.x.size(1) == T) {
        return batch;
      }
    }
    Batch batch{at::empty({rows, T}, at::kLong), at::empty({rows, T}, at::kLong)};
    if (batches_.size() < capacity_) {
      batches_.push_back(batch);
    }
    return batch;
  }

 private:
  // Only the pool's handle refers to the tensor, and no view of its storage exists (a view also holds its base).
  static bool unused(const at::Tensor& t) { return t.use_count() == 1 && t.storage().use_count() == 1; }

  size_t capacity_;
  std::vector<Batch> batches_;
};

// Assembles `rows` windows (window_of_row(b) for row b) into host tensors x, y of [rows, T]; in pinned memory when
// they will be copied to a CUDA device, else from `pool` when there is one.
template <typename WindowOfRow>
Batch assemble(const ShardSet& shards, int64_t rows, const c10::Device& device, WindowOfRow window_of_row,
               BatchPool* pool = nullptr) {
  const int64_t T = shards.order().seq_len();
  const bool pinned = device.is_cuda() && rows > 0;
  // Pinning goes through the current device's CUDA context; a fresh thread's current device is 0, and touching it
  // there would give every rank of a node a context (hundreds of MB) on GPU 0.
  c10::OptionalDeviceGuard device_guard;
  if (pinned) {
    device_guard.reset_device(device);
  }
  const auto options = at::TensorOptions().dtype(at::kLong).pinned_memory(pinned);
  Batch batch = pool != nullptr && !pinned ? pool->get(rows, T)
                                           : Batch{at::empty({rows, T}, options), at::empty({rows, T}, options)};
  int64_t* x = batch.x.data_ptr<int64_t>();
  int64_t* y = batch.y.data_ptr<int64_t>();
  for (int64_t b = 0; b < rows; ++b) {
    shards.read_window(window_of_row(b), x + b * T, y + b * T);
  }
  return batch;
}

// The batch on the target device. Non-blocking from pinned memory: the copy is queued on the current stream.
Batch to_device(Batch batch, const c10::Device& device) {
  if (device.is_cpu()) {
    return batch;
  }
  return {batch.x.to(device, at::kLong, /*non_blocking=*/true), batch.y.to(device, at::kLong, /*non_blocking=*/true)};
}

}  // namespace

// ---- TokenLoader ------------------------------------------------------------------------------------------------

TokenLoader::TokenLoader(LoaderConfig config) : config_(std::move(config)) {
  validate(config_);
  if (config_.prefetch < 1) {
    throw ConfigError(fmt::format("data: prefetch {} must be at least 1", config_.prefetch));
  }
  shards_ = std::make_unique<ShardSet>(config_.shards, config_.seq_len, config_.seed);
  const int64_t B = config_.batch_size;
  const int64_t global_batch = B * config_.world_size;
  // The queue's batches, the one being consumed and one more the consumer may still hold.
  auto pool = std::make_shared<BatchPool>(static_cast<size_t>(config_.prefetch) + 2);
  prefetcher_ = std::make_unique<Prefetcher<Batch>>(
      [this, B, pool](int64_t position) {
        const RankSlice slice = rank_slice(position, B, config_.rank);
        const SampleOrder& order = shards_->order();
        return assemble(
            *shards_, slice.count, config_.device, [&](int64_t b) { return order.sample(slice.first + b); },
            pool.get());
      },
      global_batch, config_.prefetch);
}

TokenLoader::~TokenLoader() = default;

Batch TokenLoader::next() {
  return to_device(prefetcher_->pop(), config_.device);
}

int64_t TokenLoader::position() const {
  return prefetcher_->next_index();
}

void TokenLoader::seek(int64_t global_sample) {
  if (global_sample < 0) {
    throw ConfigError(fmt::format("data: cannot seek to global sample {}", global_sample));
  }
  prefetcher_->restart(global_sample);
}

int64_t TokenLoader::samples_per_epoch() const {
  return shards_->order().num_windows();
}

const ShardInfo& TokenLoader::info() const {
  return shards_->info();
}

// ---- ValidationPass ---------------------------------------------------------------------------------------------

ValidationPass::ValidationPass(LoaderConfig config) : config_(std::move(config)) {
  validate(config_);
  shards_ = std::make_unique<ShardSet>(config_.shards, config_.seq_len, /*seed=*/0);
}

ValidationPass::~ValidationPass() = default;

int64_t ValidationPass::num_windows() const {
  return shards_->order().num_windows();
}

int64_t ValidationPass::num_steps() const {
  const int64_t global_batch = config_.batch_size * config_.world_size;
  return (num_windows() + global_batch - 1) / global_batch;
}

ValidationBatch ValidationPass::next() {
  if (done()) {
    throw Error(fmt::format("data: the validation pass is over after {} steps; reset() starts another", num_steps()));
  }
  const int64_t B = config_.batch_size;
  const RankSlice slice = rank_slice(step_ * B * config_.world_size, B, config_.rank);
  // The last step deals out what is left in rank order: this rank may get fewer than B windows, or none.
  const int64_t rows = std::clamp<int64_t>(num_windows() - slice.first, 0, slice.count);
  const SampleOrder& order = shards_->order();
  Batch batch = assemble(*shards_, rows, config_.device, [&](int64_t b) { return order.window(slice.first + b); });
  ++step_;
  return {to_device(std::move(batch), config_.device), done()};
}

}  // namespace mlagpt::data
