#include "model/attention_core.h"

#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/scaled_dot_product_attention.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "launch/error.h"

namespace mlagpt::model {

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            double dropout_p) {
  const int64_t heads = q.size(1);
  const int64_t T = q.size(2);
  const int64_t S = k.size(2);
  MLAGPT_CHECK(T <= S && heads % k.size(1) == 0,
               fmt::format("q [{}], k [{}]", fmt::join(q.sizes(), ","), fmt::join(k.sizes(), ",")));
  // Grouped keys and values go to SDPA as they are (enable_gqa: query head h reads KV head h / (H / Hkv)), with
  // no copy of them at H heads.
  const bool grouped = k.size(1) != heads;
  if (T == S) {
    const int64_t Dqk = q.size(-1);
    const int64_t Dv = v.size(-1);
    if (q.device().is_cpu() && Dv < Dqk) {
      // MLA's values are narrower than its queries and keys (Dv < Dn + Dr), which the fused CPU kernel does not
      // take (SDPA would fall back to its unfused math); zero columns appended to v give zero output columns.
      const at::Tensor padded = at::constant_pad_nd(v, {0, Dqk - Dv});
      return at::scaled_dot_product_attention(q, k, padded, {}, dropout_p, /*is_causal=*/true, scale, grouped)
          .narrow(-1, 0, Dv);
    }
    return at::scaled_dot_product_attention(q, k, v, {}, dropout_p, /*is_causal=*/true, scale, grouped);
  }
  if (T == 1) {  // the newest position sees every cached key
    return at::scaled_dot_product_attention(q, k, v, {}, dropout_p, /*is_causal=*/false, scale, grouped);
  }
  // A chunk after a cached prefix.
  return at::scaled_dot_product_attention(q, k, v, chunk_causal_mask(T, S, q.options()), dropout_p,
                                          /*is_causal=*/false, scale, grouped);
}

at::Tensor chunk_causal_mask(int64_t T, int64_t S, const at::TensorOptions& options) {
  return at::ones({T, S}, options.dtype(at::kBool)).tril(S - T);
}

}  // namespace mlagpt::model
