#include "model/rms_norm_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

namespace mlagpt::model {
namespace {

// Rows per task: enough work (about 16k values) that a thread's start-up does not dominate.
int64_t grain(int64_t D) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1));
}

// y = x * r * w per row, r = 1 / sqrt(mean(x^2) + eps) kept for backward. The sums run in T (float32 or float64),
// vectorized (`omp simd` reassociates them), equal to the composite form's mean within rounding.
template <typename T>
void forward_rows(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t D, double eps) {
  at::parallel_for(0, rows, grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* xi = x + i * D;
      T* yi = y + i * D;
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < D; ++j) {
        sum += xi[j] * xi[j];
      }
      const T r = static_cast<T>(1.0 / std::sqrt(static_cast<double>(sum) / static_cast<double>(D) + eps));
      rstd[i] = r;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j) {
        yi[j] = xi[j] * r * w[j];
      }
    }
  });
}

// With h = x r (the normalized row) and gw = g w:
//   dx = r (gw - h mean(gw h)),   dw = sum over rows of g h.
// dw is summed per task into its own row of `partial`, then over the tasks, so no two threads write one value.
template <typename T>
void backward_rows(const T* g, const T* x, const T* w, const T* rstd, T* dx, T* partial, int64_t tasks, int64_t rows,
                   int64_t D) {
  const int64_t chunk = (rows + tasks - 1) / tasks;
  at::parallel_for(0, tasks, 1, [&](int64_t task_begin, int64_t task_end) {
    for (int64_t task = task_begin; task < task_end; ++task) {
      T* dw = partial + task * D;
      const int64_t end = std::min(rows, (task + 1) * chunk);
      for (int64_t i = task * chunk; i < end; ++i) {
        const T* gi = g + i * D;
        const T* xi = x + i * D;
        T* dxi = dx + i * D;
        const T r = rstd[i];
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < D; ++j) {
          dot += gi[j] * w[j] * xi[j];
        }
        const T c = dot * r * r / static_cast<T>(D);  // mean(gw h) / r
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) {
          dxi[j] = r * (gi[j] * w[j] - xi[j] * c);
          dw[j] += gi[j] * xi[j] * r;
        }
      }
    }
  });
}

struct FusedRmsNorm : public torch::autograd::Function<FusedRmsNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            double eps) {
    const at::Tensor x = input.contiguous();
    const int64_t D = x.size(-1);
    const int64_t rows = x.numel() / D;
    at::Tensor y = at::empty_like(x);
    at::Tensor rstd = at::empty({rows}, x.options());
    const auto run = [&]<typename T>(T /*tag*/) {
      forward_rows<T>(x.const_data_ptr<T>(), weight.const_data_ptr<T>(), y.mutable_data_ptr<T>(),
                      rstd.mutable_data_ptr<T>(), rows, D, eps);
    };
    x.scalar_type() == at::kDouble ? run(double{}) : run(float{});
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& rstd = saved[2];
    const at::Tensor g = grads[0].contiguous();
    const int64_t D = x.size(-1);
    const int64_t rows = x.numel() / D;
    const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / grain(D)));
    at::Tensor dx = at::empty_like(x);
    at::Tensor partial = at::zeros({tasks, D}, x.options());
    const auto run = [&]<typename T>(T /*tag*/) {
      backward_rows<T>(g.const_data_ptr<T>(), x.const_data_ptr<T>(), weight.const_data_ptr<T>(),
                       rstd.const_data_ptr<T>(), dx.mutable_data_ptr<T>(), partial.mutable_data_ptr<T>(), tasks, rows,
                       D);
    };
    x.scalar_type() == at::kDouble ? run(double{}) : run(float{});
    return {dx, partial.sum(0), at::Tensor()};
  }
};

}  // namespace

bool rms_norm_cpu_supports(const at::Tensor& x, const at::Tensor& weight) {
  const auto dtype = x.scalar_type();
  return x.device().is_cpu() && weight.device().is_cpu() && (dtype == at::kFloat || dtype == at::kDouble) &&
         weight.scalar_type() == dtype && weight.dim() == 1 && x.dim() >= 1 && x.size(-1) == weight.size(0) &&
         weight.is_contiguous() && x.numel() > 0;
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return FusedRmsNorm::apply(x, weight, eps);
}

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
}

}  // namespace mlagpt::model
