#include "trainer/compression/convert.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "launch/error.h"

namespace mlagpt::trainer {
namespace {

using model::AttentionKind;

// The dimensions of a head of width dh that keep their rotation (the pairs 0, s, 2s, ...) and the others, in order.
void split_dims(int64_t dh, int64_t dr, std::vector<int64_t>& rope, std::vector<int64_t>& nope) {
  const int64_t stride = dr > 0 ? dh / dr : 0;
  for (int64_t pair = 0; pair < dh / 2; ++pair) {
    const bool kept = dr > 0 && pair % stride == 0 && pair / stride < dr / 2;
    (kept ? rope : nope).push_back(2 * pair);
    (kept ? rope : nope).push_back(2 * pair + 1);
  }
}

at::Tensor rows(const at::Tensor& t, const std::vector<int64_t>& index) {
  return t.index_select(0, at::tensor(index, at::kLong).to(t.device()));
}

}  // namespace

model::ModelConfig mla_config_for(const model::ModelConfig& source, int64_t kv_lora_rank, int64_t rope_dim) {
  model::ModelConfig c = source;
  c.resolve();
  if (c.attention == AttentionKind::kMla) {
    throw ConfigError("convert --to-mla: the checkpoint's model is MLA already");
  }
  const int64_t dh = c.head_dim();
  if (rope_dim < 0) {
    rope_dim = 0;
    if (c.uses_rope()) {
      for (int64_t dr = std::max<int64_t>(2, dh / 4); dr >= 2; dr -= 2) {
        if (dh % dr == 0) {
          rope_dim = dr;
          break;
        }
      }
    }
  }
  if (!c.uses_rope() && rope_dim != 0) {
    throw ConfigError(
        fmt::format("convert --to-mla: --rope-dim {}: the model has learned positions (no RoPE), so the "
                    "MLA model has no rope dimensions; leave --rope-dim out",
                    rope_dim));
  }
  if (c.uses_rope() && (rope_dim < 2 || rope_dim % 2 != 0 || dh % rope_dim != 0 || rope_dim >= dh)) {
    throw ConfigError(
        fmt::format("convert --to-mla: --rope-dim {} must be even, divide the head width {} and be "
                    "smaller than it (kept rotary pairs are every {} / rope-dim-th pair)",
                    rope_dim, dh, dh));
  }
  const int64_t most = std::min(c.n_head * (2 * dh - rope_dim), c.n_embd);
  if (kv_lora_rank < 1 || kv_lora_rank > most) {
    throw ConfigError(
        fmt::format("convert --to-mla: --kv-lora-rank {} must be in [1, {}] (the rank of the stacked "
                    "key and value projections, [{} x {}])",
                    kv_lora_rank, most, c.n_head * (2 * dh - rope_dim), c.n_embd));
  }
  c.attention = AttentionKind::kMla;
  c.n_kv_head = 0;
  c.q_lora_rank = 0;
  c.kv_lora_rank = kv_lora_rank;
  c.qk_rope_head_dim = rope_dim;
  c.qk_nope_head_dim = dh - rope_dim;
  c.v_head_dim = dh;
  c.kv_norm = false;
  c.low_rank.clear();
  c.resolve();
  return c;
}

std::vector<LayerConversion> convert_to_mla(const model::Gpt& source, model::Gpt& target) {
  const model::ModelConfig& s = source.config();
  const model::ModelConfig& t = target.config();
  if (source.tensor_parallel().size() > 1 || target.tensor_parallel().size() > 1) {
    throw Error("convert --to-mla runs on one device (tensor parallelism = 1)");
  }
  if (t.attention != AttentionKind::kMla || t.kv_norm || t.q_lora_rank != 0 || !t.low_rank.empty() ||
      t.v_head_dim != s.head_dim() || t.qk_nope_head_dim + t.qk_rope_head_dim != s.head_dim() || t.n_head != s.n_head ||
      t.n_layer != s.n_layer || t.n_embd != s.n_embd) {
    throw Error("convert_to_mla: the target model is not mla_config_for(source)");
  }
  const int64_t H = s.n_head;
  const int64_t group = s.n_head / s.n_kv_head;  // query heads per KV head
  const int64_t dh = s.head_dim();
  const int64_t dr = t.qk_rope_head_dim;
  const int64_t dc = t.kv_lora_rank;
  std::vector<int64_t> rope_dims;
  std::vector<int64_t> nope_dims;
  split_dims(dh, dr, rope_dims, nope_dims);

  const c10::NoGradGuard no_grad;
  auto parameters = target.named_parameters();
  std::set<std::string> written;
  const auto write = [&](const std::string& name, const at::Tensor& value) {
    at::Tensor* found = parameters.find(name);
    if (found == nullptr) {
      throw Error(fmt::format("convert_to_mla: the MLA model has no parameter {}", name));
    }
    at::Tensor& p = *found;
    if (p.sizes() != value.sizes()) {
      throw Error(fmt::format("convert_to_mla: {} is {} in the MLA model, the conversion made {}", name,
                              fmt::join(p.sizes(), "x"), fmt::join(value.sizes(), "x")));
    }
    p.copy_(value);
    written.insert(name);
  };
  std::vector<LayerConversion> report;
  for (int64_t layer = 0; layer < s.n_layer; ++layer) {
    const std::string from = fmt::format("blocks.{}.attn.", layer);
    const auto weight = [&](const std::string& name) {
      return source.projection(from + name)->effective_weight().detach().to(at::kDouble);
    };
    const auto bias = [&](const std::string& name) { return source.projection(from + name)->bias(); };
    const at::Tensor wq = weight("q_proj").view({H, dh, -1});
    const at::Tensor wk = weight("k_proj").view({s.n_kv_head, dh, -1});
    const at::Tensor wv = weight("v_proj").view({s.n_kv_head, dh, -1});
    std::vector<at::Tensor> q_rows;
    std::vector<at::Tensor> kv_rows;
    std::vector<at::Tensor> rope_keys;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      q_rows.push_back(at::cat({rows(wq[h], nope_dims), rows(wq[h], rope_dims)}));
      kv_rows.push_back(at::cat({rows(wk[g], nope_dims), wv[g]}));
    }
    for (int64_t g = 0; g < s.n_kv_head; ++g) {
      rope_keys.push_back(rows(wk[g], rope_dims));
    }
    const at::Tensor m = at::cat(kv_rows);  // [H (Dn + Dv), d]
    const auto [u, sigma, vh] = at::linalg_svd(m, /*full_matrices=*/false);
    const at::Tensor root = sigma.narrow(0, 0, dc).sqrt();
    const double total = sigma.square().sum().item<double>();
    const double kept = sigma.narrow(0, 0, dc).square().sum().item<double>();
    report.push_back({.layer = layer,
                      .kept_energy = total > 0 ? kept / total : 1.0,
                      .relative_error = total > 0 ? std::sqrt(std::max(0.0, total - kept) / total) : 0.0});
    const std::string to = from;
    write(to + "q_proj.weight", at::cat(q_rows).to(at::kFloat));
    write(to + "kv_up.weight", (u.narrow(1, 0, dc) * root).to(at::kFloat));
    at::Tensor kv_down = vh.narrow(0, 0, dc) * root.unsqueeze(1);  // [Dc, d]
    if (dr > 0) {
      kv_down = at::cat({kv_down, at::stack(rope_keys).mean(0)});  // the shared RoPE key: the heads' mean
    }
    write(to + "kv_down.weight", kv_down.to(at::kFloat));
    write(to + "o_proj.weight", weight("o_proj").to(at::kFloat));
    if (s.bias) {
      const at::Tensor bq = bias("q_proj").detach().view({H, dh});
      const at::Tensor bk = bias("k_proj").detach().view({s.n_kv_head, dh});
      const at::Tensor bv = bias("v_proj").detach().view({s.n_kv_head, dh});
      std::vector<at::Tensor> q_bias;
      std::vector<at::Tensor> kv_bias;
      std::vector<at::Tensor> rope_bias;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / group;
        q_bias.push_back(at::cat({rows(bq[h], nope_dims), rows(bq[h], rope_dims)}));
        kv_bias.push_back(at::cat({rows(bk[g], nope_dims), bv[g]}));
      }
      for (int64_t g = 0; g < s.n_kv_head; ++g) {
        rope_bias.push_back(rows(bk[g], rope_dims));
      }
      write(to + "q_proj.bias", at::cat(q_bias));
      write(to + "kv_up.bias", at::cat(kv_bias));
      at::Tensor down_bias = at::zeros({dc}, bq.options());  // kv_up's bias carries the keys' and values'
      if (dr > 0) {
        down_bias = at::cat({down_bias, at::stack(rope_bias).mean(0)});
      }
      write(to + "kv_down.bias", down_bias);
      write(to + "o_proj.bias", bias("o_proj").detach());
    }
  }
  // Everything outside attention (embeddings, norms, MLP, head) by name.
  for (const auto& item : source.named_parameters()) {
    if (item.key().find(".attn.") != std::string::npos) {
      continue;
    }
    write(item.key(), item.value().detach());
  }
  for (const auto& item : target.named_parameters()) {
    if (!written.contains(item.key())) {
      throw Error(fmt::format("convert_to_mla: the MLA model's {} was not set", item.key()));
    }
  }
  return report;
}

}  // namespace mlagpt::trainer
