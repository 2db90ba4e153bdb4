// Key/value caches for incremental decoding: one LayerCache per layer, owned by a KvCache that knows how many
// positions are filled.
//
// StandardLayerCache (MHA/GQA/MQA) keeps K and V at n_kv_head heads: [B, S_max, Hkv, Dh] each, 2 Hkv Dh values per
// token. LatentLayerCache (MLA) keeps only the normalized KV latent [B, S_max, Dc] and the roped shared key
// [B, S_max, Dr]: Dc + Dr values per token, which is MLA's point. It stores them side by side in one
// [B, S_max, Dc + Dr] buffer, so absorbed decoding reads its keys [latent | rope key] in place, with no copy per
// step. Storage is allocated once at S_max; writes go to positions [start, start + T) and reads return views of
// [0, end).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

namespace mlagpt::model {

// How MLA decodes with its cache: `kNaive` expands K and V from the cached latent for every cached token at each
// step; `kAbsorbed` folds the key up-projection into the query and applies the value up-projection after
// attention over the latent (docs/mla.md, "Absorbed decoding"), never expanding K or V.
enum class MlaDecodeMode { kNaive, kAbsorbed };

class LayerCache {
 public:
  virtual ~LayerCache() = default;
  virtual int64_t bytes() const = 0;
};

class StandardLayerCache final : public LayerCache {
 public:
  StandardLayerCache(int64_t batch, int64_t max_len, int64_t kv_heads, int64_t head_dim, const at::TensorOptions& o);
  // k, v: [B, T, Hkv, Dh] written at [start, start + T).
  void write(int64_t start, const at::Tensor& k, const at::Tensor& v);
  at::Tensor keys(int64_t end) const { return k_.narrow(1, 0, end); }    // [B, end, Hkv, Dh]
  at::Tensor values(int64_t end) const { return v_.narrow(1, 0, end); }  // [B, end, Hkv, Dh]
  int64_t bytes() const override;

 private:
  at::Tensor k_;
  at::Tensor v_;
};

class LatentLayerCache final : public LayerCache {
 public:
  LatentLayerCache(int64_t batch, int64_t max_len, int64_t latent_dim, int64_t rope_dim, const at::TensorOptions& o);
  // latent: [B, T, Dc] (after kv_norm), rope_key: [B, T, Dr] (after RoPE), written at [start, start + T).
  void write(int64_t start, const at::Tensor& latent, const at::Tensor& rope_key);
  at::Tensor latent(int64_t end) const { return keys(end).narrow(-1, 0, latent_dim_); }  // [B, end, Dc]
  at::Tensor rope_key(int64_t end) const {                                               // [B, end, Dr]
    return keys(end).narrow(-1, latent_dim_, keys_.size(-1) - latent_dim_);
  }
  at::Tensor keys(int64_t end) const { return keys_.narrow(1, 0, end); }  // [B, end, Dc + Dr]: latent, rope key
  int64_t bytes() const override;

 private:
  at::Tensor keys_;
  int64_t latent_dim_;
};

class KvCache {
 public:
  KvCache(std::vector<std::unique_ptr<LayerCache>> layers, int64_t max_len, MlaDecodeMode mode)
      : layers_(std::move(layers)), max_len_(max_len), mode_(mode) {}
  LayerCache& layer(size_t i) { return *layers_.at(i); }
  int64_t length() const { return length_; }
  int64_t max_length() const { return max_len_; }
  MlaDecodeMode mode() const { return mode_; }
  // Called by the model after every layer has written positions [length, length + tokens).
  void advance(int64_t tokens) { length_ += tokens; }
  void clear() { length_ = 0; }
  // Bytes held by all layers (allocated for max_length positions).
  int64_t bytes() const;

 private:
  std::vector<std::unique_ptr<LayerCache>> layers_;
  int64_t max_len_;
  int64_t length_ = 0;
  MlaDecodeMode mode_;
};

}  // namespace mlagpt::model
