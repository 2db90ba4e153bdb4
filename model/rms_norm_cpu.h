// RMSNorm on the CPU as one pass forward and one backward (each row: its sum of squares, then the scaled output),
// where the composite form at::rms_norm falls back to on a CPU runs five kernels forward and about ten backward over
// the whole tensor. For float32 and float64 x of the weight's dtype, contiguous; RmsNorm (norm.h) uses it there and
// at::rms_norm elsewhere (CUDA, bfloat16). rms_norm_reference() is the plain composite form it is tested against
// (tests/model/attention_test.cpp); the training benchmark (BENCHMARKS.md) shows the difference in a step.
#pragma once

#include <ATen/core/Tensor.h>

namespace mlagpt::model {

// Whether rms_norm_cpu takes x with this weight.
bool rms_norm_cpu_supports(const at::Tensor& x, const at::Tensor& weight);

// x [..., D], weight [D] -> x * rsqrt(mean(x^2, -1) + eps) * weight, differentiable in x and weight.
at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps);

// The same in composite ops, in x's dtype.
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace mlagpt::model
