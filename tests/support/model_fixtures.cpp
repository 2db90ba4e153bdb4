#include "support/model_fixtures.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/randn_like.h>
#include <c10/core/GradMode.h>

namespace mlagpt::testing {

double relative_error(const at::Tensor& actual, const at::Tensor& reference) {
  const at::Tensor a = actual.detach().cpu().to(at::kDouble);
  const at::Tensor r = reference.detach().cpu().to(at::kDouble);
  const double scale = r.abs().max().item<double>();
  const double diff = (a - r).abs().max().item<double>();
  return scale == 0 ? diff : diff / scale;
}

namespace {
template <typename T>
at::Tensor read_tensor(const data::h5::File& file, const std::string& name, at::ScalarType type) {
  const auto dataset = file.open_dataset(name);
  const std::vector<uint64_t> dims = dataset.shape();
  std::vector<T> values = dataset.read_all<T>();
  const std::vector<int64_t> shape(dims.begin(), dims.end());
  return at::from_blob(values.data(), shape, type).clone();
}
}  // namespace

at::Tensor read_float_tensor(const data::h5::File& file, const std::string& name) {
  return read_tensor<float>(file, name, at::kFloat);
}

at::Tensor read_long_tensor(const data::h5::File& file, const std::string& name) {
  return read_tensor<int64_t>(file, name, at::kLong);
}

model::ModelConfig tiny_config(model::AttentionKind kind) {
  model::ModelConfig c;
  c.vocab_size = 61;
  c.block_size = 24;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.attention = kind;
  c.n_kv_head = kind == model::AttentionKind::kGqa ? 2 : 0;
  if (kind == model::AttentionKind::kMla) {
    c.q_lora_rank = 24;
    c.kv_lora_rank = 16;
    c.qk_nope_head_dim = 8;
    c.qk_rope_head_dim = 4;
    c.v_head_dim = 6;
  }
  c.resolve();
  return c;
}

void sharpen(model::Gpt& model, double factor) {
  const c10::NoGradGuard no_grad;
  for (auto& p : model.parameters()) {
    if (p.dim() > 1) {
      p.mul_(factor);
    } else {
      p.add_(at::randn_like(p), 0.1);  // biases and norm weights away from 0 and 1, so their bugs show too
    }
  }
}

}  // namespace mlagpt::testing
