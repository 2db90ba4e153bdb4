// Projection: a linear map y = x W^T + b that attention and MLP layers hold wherever they need one, so that a
// dense layer can be swapped for a low-rank one (compression) without the layer noticing.
//
// DenseLinear holds W [out, in]; LowRankLinear holds W = B A with A [rank, in] and B [out, rank] and computes
// y = B (A x) + b, which costs rank * (in + out) multiply-adds instead of in * out. effective_weight() gives W in
// either case (absorbed MLA decoding folds it into the query). Parameter names: `weight` (dense), `weight_a` and
// `weight_b` (low rank), and `bias` when present.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <memory>

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
};

}  // namespace mlagpt::model
