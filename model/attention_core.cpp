#include "model/attention_core.h"

#include <ATen/ops/ones.h>
#include <ATen/ops/scaled_dot_product_attention.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "launch/error.h"

namespace mlagpt::model {
namespace {

// [B, Hkv, S, D] -> [B, H, S, D], kv head j serving query heads j*g .. j*g + g - 1.
at::Tensor share_heads(const at::Tensor& x, int64_t heads) {
  const int64_t kv_heads = x.size(1);
  if (kv_heads == heads) {
    return x;
  }
  if (kv_heads == 1) {
    return x.expand({x.size(0), heads, x.size(2), x.size(3)});  // a view, no copy
  }
  return x.repeat_interleave(heads / kv_heads, 1);
}

}  // namespace

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            double dropout_p) {
  const int64_t heads = q.size(1);
  const int64_t T = q.size(2);
  const int64_t S = k.size(2);
  MLAGPT_CHECK(T <= S && heads % k.size(1) == 0,
               fmt::format("q [{}], k [{}]", fmt::join(q.sizes(), ","), fmt::join(k.sizes(), ",")));
  const at::Tensor key = share_heads(k, heads);
  const at::Tensor value = share_heads(v, heads);
  if (T == S) {
    return at::scaled_dot_product_attention(q, key, value, {}, dropout_p, /*is_causal=*/true, scale);
  }
  if (T == 1) {  // the newest position sees every cached key
    return at::scaled_dot_product_attention(q, key, value, {}, dropout_p, /*is_causal=*/false, scale);
  }
  // A chunk after a cached prefix: the causal mask aligned to the bottom-right corner.
  const at::Tensor mask = at::ones({T, S}, q.options().dtype(at::kBool)).tril(S - T);
  return at::scaled_dot_product_attention(q, key, value, mask, dropout_p, /*is_causal=*/false, scale);
}

}  // namespace mlagpt::model
