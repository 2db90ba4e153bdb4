#include "model/kv_cache.h"

#include <ATen/ops/zeros.h>

namespace mlagpt::model {

StandardLayerCache::StandardLayerCache(int64_t batch, int64_t max_len, int64_t kv_heads, int64_t head_dim,
                                       const at::TensorOptions& o)
    : k_(at::zeros({batch, max_len, kv_heads, head_dim}, o)), v_(at::zeros({batch, max_len, kv_heads, head_dim}, o)) {}

void StandardLayerCache::write(int64_t start, const at::Tensor& k, const at::Tensor& v) {
  k_.narrow(1, start, k.size(1)).copy_(k);
  v_.narrow(1, start, v.size(1)).copy_(v);
}

int64_t StandardLayerCache::bytes() const {
  return static_cast<int64_t>(k_.nbytes() + v_.nbytes());
}

LatentLayerCache::LatentLayerCache(int64_t batch, int64_t max_len, int64_t latent_dim, int64_t rope_dim,
                                   const at::TensorOptions& o)
    : keys_(at::zeros({batch, max_len, latent_dim + rope_dim}, o)), latent_dim_(latent_dim) {}

void LatentLayerCache::write(int64_t start, const at::Tensor& latent, const at::Tensor& rope_key) {
  const at::Tensor rows = keys_.narrow(1, start, latent.size(1));
  rows.narrow(-1, 0, latent_dim_).copy_(latent);
  rows.narrow(-1, latent_dim_, keys_.size(-1) - latent_dim_).copy_(rope_key);
}

int64_t LatentLayerCache::bytes() const {
  return static_cast<int64_t>(keys_.nbytes());
}

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (const auto& layer : layers_) {
    total += layer->bytes();
  }
  return total;
}

}  // namespace mlagpt::model
