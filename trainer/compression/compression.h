// Layer compression by the randomized SVD (docs/design.md, "Compression"). One pass replaces every targeted
// projection W [out, in] of a Gpt by a rank-k approximation W_k = U_k S_k V_k^T:
//
//   factorize  the projection becomes a LowRankLinear W = B A with B = U_k S_k^1/2 [out, k] and A = S_k^1/2 V_k^T
//              [k, in] (Gpt::factorize); a projection that is low rank already is re-factorized from its factors,
//              never forming B A: with B = Q R (a tall QR), W = Q (R A) and the SVD of the small R A [r, in] is that
//              of W. A later pass may lower the rank, never raise it (what was cut is gone).
//   project    W keeps its dense shape and is overwritten with W_k (a rank-constrained run: training adds rank
//              back between passes).
//
// The rank: `rank` = k; `energy` = e, the smallest k with sum_{i<k} s_i^2 >= e ||W||_F^2 (a dense W's spectrum
// is found by randomized SVDs of doubling width until the kept energy reaches e, or the SVD is exact); or
// `param_ratio` = p, the k whose factors hold p of the dense layer's out * in weights, floor(p out in / (out + in)).
// k is clamped to [1, min(out, in)] (and to the current rank of a low-rank projection). In factorize mode a dense
// projection whose rank-k factors would hold as many weights as it or more, k (out + in) >= out in, stays dense
// and unchanged (reported as rank 0, kept energy 1, error 0).
//
// Distributed, with no weight ever gathered: over the model's tensor-parallel group each projection is factored
// from the shards the ranks hold (linalg/sharded_rsvd.h: a column-parallel weight is split by rows, a row-parallel
// one by columns; a low-rank one by a sharded tall QR of its split factor); each rank's factors are its shards of B
// and A under Gpt's low-rank layout (model/projection.h). Over the data-parallel group the targets are dealt out
// round-robin (target j to data-parallel rank j mod dp), each rank factors its own, and then every target's
// factors are broadcast from the rank that computed them: a pass takes about 1/dp of the time.
//
// Everything is deterministic: target j's sketch is drawn from (seed, j), so a pass over the same weights gives
// the same factors whatever the number of data-parallel ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "launch/communicator.h"
#include "model/gpt.h"

namespace mlagpt::trainer {

enum class CompressMode { kFactorize, kProject };
std::string_view to_string(CompressMode mode);
// ConfigError naming `field` and the accepted values.
CompressMode parse_compress_mode(std::string_view field, std::string_view text);

// Exactly one of the three is set (> 0).
struct RankRule {
  int64_t rank = 0;
  double energy = 0;       // in (0, 1]
  double param_ratio = 0;  // in (0, 1)
};

struct CompressionSettings {
  std::vector<std::string> targets;  // globs over projection paths ('*' matches any run of characters)
  RankRule rule;
  CompressMode mode = CompressMode::kFactorize;
  int64_t oversample = 10;
  int64_t power_iters = 2;
  uint64_t seed = 0;
};

// One projection's compression. Counts are of the whole projection (all tensor-parallel shards), bias included.
struct LayerCompression {
  std::string path;
  int64_t rank_before = 0;    // 0: it was dense
  int64_t rank = 0;           // k
  double kept_energy = 0;     // sum_{i<k} s_i^2 / ||W||_F^2
  double relative_error = 0;  // ||W - W_k||_F / ||W||_F
  int64_t parameters_before = 0;
  int64_t parameters_after = 0;
  double seconds = 0;  // the factorization, on the data-parallel rank that computed it
  int owner = 0;       // that rank
};

struct CompressionReport {
  std::vector<LayerCompression> layers;
  int64_t model_parameters_before = 0;
  int64_t model_parameters_after = 0;
  int64_t kv_cache_values_per_token = 0;  // unchanged by compression: the cache holds activations, not weights
  double seconds = 0;                     // the whole pass, this rank, broadcasts included
};

// "blocks.*.mlp.*,blocks.*.attn.kv_up" -> the globs (spaces around commas ignored).
std::vector<std::string> split_targets(std::string_view text);
// The projection paths of `model` that any glob matches, in model order. ConfigError naming `field`, the glob and
// the model's projections for a glob that matches none.
std::vector<std::string> select_targets(const model::Gpt& model, const std::vector<std::string>& globs,
                                        std::string_view field = "compress.targets");

// The k `rule` gives a [out, in] weight whose leading singular values (descending) are `s`, of total energy
// ||W||_F^2 = `total_energy`. For `energy`, 0 when the leading values do not reach the share yet (a wider SVD is
// needed); clamped to [1, min(out, in, s.size() for energy)].
int64_t choose_rank(const RankRule& rule, int64_t out, int64_t in, const at::Tensor& s, double total_energy);

// Weights of the whole model: every parameter counted once, split ones over all tensor-parallel ranks together.
int64_t full_parameter_count(const model::Gpt& model);

// One pass over the projections `settings.targets` selects. Collective over `tp` (the model's tensor-parallel group,
// the same ranks as model.tensor_parallel()) and `dp`; every rank of both calls it with the same settings. In
// factorize mode the model's parameters change (Gpt::factorize): an optimizer over them must be rebuilt. Error
// naming the path for a project-mode target that is already low rank, or for a factorization that fails (a
// non-finite weight); such a failure on one data-parallel rank is an Error on every rank before any broadcast, so
// none is left waiting, and nothing has been replaced.
CompressionReport compress_model(model::Gpt& model, const CompressionSettings& settings, launch::Communicator& tp,
                                 launch::Communicator& dp);

}  // namespace mlagpt::trainer
