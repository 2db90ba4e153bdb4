// Projection: a linear map y = x W^T + b that attention and MLP layers hold wherever they need one, so that a
// dense layer can be swapped for a low-rank one (compression) without the layer noticing.
//
// DenseLinear holds W [out, in]; LowRankLinear holds W = B A with A [rank, in] and B [out, rank] and computes
// y = B (A x) + b, which costs rank * (in + out) multiply-adds instead of in * out. effective_weight() gives W in
// either case (absorbed MLA decoding folds it into the query; without autograd a LowRankLinear keeps the product
// until A or B changes, so decoding forms it once per weight version, not once per token). Parameter names: `weight`
// (dense), `weight_a` and `weight_b` (low rank), and `bias` when present.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <array>
#include <map>
#include <memory>
#include <string>

#include "model/tensor_parallel.h"

namespace mlagpt::model {

class Projection : public torch::nn::Module {
 public:
  Projection(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  virtual at::Tensor forward(const at::Tensor& x) = 0;  // [..., in] -> [..., out]
  virtual at::Tensor effective_weight() const = 0;      // [out, in]
  virtual at::Tensor bias() const = 0;                  // [out], or undefined
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 private:
  int64_t in_features_;
  int64_t out_features_;
};

class DenseLinear final : public Projection {
 public:
  DenseLinear(int64_t in_features, int64_t out_features, bool bias);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor effective_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  at::Tensor& weight() { return weight_; }

 private:
  at::Tensor weight_;
  at::Tensor bias_;
};

class LowRankLinear final : public Projection {
 public:
  // `in_features` and `out_features` are this rank's (a tensor-parallel shard may be narrower than the rank);
  // rank >= 1, else ConfigError.
  LowRankLinear(int64_t in_features, int64_t out_features, int64_t rank, bool bias);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor effective_weight() const override;
  at::Tensor bias() const override { return bias_; }
  int64_t rank() const { return weight_a_.size(0); }
  at::Tensor& weight_a() { return weight_a_; }  // A [rank, in]
  at::Tensor& weight_b() { return weight_b_; }  // B [out, rank]

 private:
  at::Tensor weight_a_;
  at::Tensor weight_b_;
  at::Tensor bias_;
  // effective_weight() outside autograd, and the versions of A and B it was formed from.
  mutable at::Tensor product_;
  mutable std::array<int64_t, 2> product_versions_{};
  mutable std::array<const void*, 2> product_sources_{};
};

// How a projection is laid out over the tensor-parallel group (Megatron-LM). Column-parallel: each rank holds a
// slice of the outputs (weight rows and bias split along dim 0) and reads the whole input. Row-parallel: each rank
// holds a slice of the inputs (weight columns, dim 1) and produces a partial output summed over the group; its bias
// is whole on every rank and added once, after the sum (row_parallel_forward). Replicated: whole on every rank, and
// the ranks use different parts of its output, so its gradient is summed over the group after backward.
enum class TpLayout { kColumn, kRow, kReplicated };

// The splits of `projection`'s parameters, named `name`.weight (or .weight_a and .weight_b) and `name`.bias, under
// `layout`, replacing any earlier entries of `name`. A low-rank projection W = B A splits the factor on the split
// side of W: column-parallel, B by rows (A whole, its gradient summed: each rank's B uses all of it); row-parallel,
// A by columns (B whole, applied after the sum, its gradient whole on every rank); replicated, both summed.
void add_projection_splits(std::map<std::string, ParameterSplit, std::less<>>& splits, const std::string& name,
                           TpLayout layout, const Projection& projection);

// A row-parallel projection: the partial products x W_r^T summed over the group, plus the bias; for a low-rank one
// the partial x A_r^T (rank wide) is summed and B applied after. On one device projection.forward(x).
at::Tensor row_parallel_forward(Projection& projection, const at::Tensor& x, const TensorParallel& group);

}  // namespace mlagpt::model
