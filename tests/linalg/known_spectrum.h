// Matrices with a known spectrum for the randomized SVD's tests: A = U diag(sigma) V^T with U and V random
// orthonormal factors (QR of Gaussians, float64), so the optimal rank-k errors are known exactly, and the
// Halko-Martinsson-Tropp bounds that rsvd's errors must respect.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linalg_matrix_norm.h>
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linspace.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace mlagpt::testing {

struct KnownMatrix {
  std::string name;
  at::Tensor a;      // [m, n] float64
  at::Tensor sigma;  // [min(m, n)] float64, descending (zeros past the rank)
};

inline at::Tensor random_orthonormal(int64_t rows, int64_t cols, at::Generator& generator) {
  auto [q, r] = at::linalg_qr(at::randn({rows, cols}, generator, at::TensorOptions().dtype(at::kDouble)));
  return q;
}

// `values` (float64, at most min(m, n) of them, descending) padded with zeros to min(m, n).
inline KnownMatrix with_spectrum(std::string name, int64_t m, int64_t n, const at::Tensor& values, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t r = values.size(0);
  const at::Tensor u = random_orthonormal(m, r, generator);
  const at::Tensor v = random_orthonormal(n, r, generator);
  at::Tensor sigma = at::zeros({std::min(m, n)}, at::kDouble);
  sigma.narrow(0, 0, r).copy_(values);
  return {std::move(name), at::mm(u * values, v.t()), sigma};
}

inline at::Tensor geometric(int64_t count, double ratio) {
  return at::pow(ratio, at::arange(count, at::kDouble));
}

inline at::Tensor slow_decay(int64_t count) {  // 1 / sqrt(1 + i)
  return at::pow(at::arange(count, at::kDouble) + 1.0, -0.5);
}

inline at::Tensor flat(int64_t count) {
  return at::full({count}, 1.0, at::kDouble);
}

// `rank` values from 1 down to 0.5, then a flat tail of `noise` up to min(m, n).
inline at::Tensor low_rank_plus_noise(int64_t rank, int64_t count, double noise) {
  return at::cat({at::linspace(1.0, 0.5, rank, at::kDouble), at::full({count - rank}, noise, at::kDouble)});
}

inline double spectral_norm(const at::Tensor& e) {
  return at::linalg_matrix_norm(e, 2).item<double>();
}

inline double frobenius_norm(const at::Tensor& e) {
  return at::linalg_matrix_norm(e, "fro").item<double>();
}

// Root-sum-square of sigma_{k+1}, sigma_{k+2}, ... raised to `power` (the optimal Frobenius error for power 1).
inline double tail(const at::Tensor& sigma, int64_t k, double power = 1.0) {
  return std::sqrt(at::pow(sigma.narrow(0, k, sigma.size(0) - k), 2.0 * power).sum().item<double>());
}

// ||(I - Q Q^T) A||_2 with probability at least 1 - 6 e^-p: HMT 2011 corollary 10.9 applied to (A A^T)^q A, whose
// singular values are sigma^(2q+1), and theorem 9.2 (the range error of A is at most that of (A A^T)^q A to the
// power 1/(2q+1)).
inline double hmt_range_spectral_bound(const at::Tensor& sigma, int64_t k, int64_t p, int64_t q) {
  const double power = 2.0 * static_cast<double>(q) + 1.0;
  const double kd = static_cast<double>(k);
  const double pd = static_cast<double>(p);
  const double next = std::pow(sigma[k].item<double>(), power);
  const double bound =
      (1.0 + 17.0 * std::sqrt(1.0 + kd / pd)) * next + 8.0 * std::sqrt(kd + pd) / (pd + 1.0) * tail(sigma, k, power);
  return std::pow(bound, 1.0 / power);
}

// ||(I - Q Q^T) A||_F: for q = 0 HMT theorem 10.7 with t = e and u = sqrt(2p) (probability at least 1 - 6 e^-p);
// for q > 0 (where HMT state no Frobenius bound) the rank-k part's error is at most sqrt(k) times the spectral
// bound, and the rest is the optimal tail.
inline double hmt_range_frobenius_bound(const at::Tensor& sigma, int64_t k, int64_t p, int64_t q) {
  const double kd = static_cast<double>(k);
  const double pd = static_cast<double>(p);
  const double e = std::exp(1.0);
  const double optimal = tail(sigma, k);
  const double by_power = std::sqrt(kd) * hmt_range_spectral_bound(sigma, k, p, q) + optimal;
  if (q > 0) {
    return by_power;
  }
  const double t107 = (1.0 + e * std::sqrt(12.0 * kd / pd)) * optimal +
                      std::sqrt(2.0 * pd) * e * e * std::sqrt(kd + pd) / (pd + 1.0) * sigma[k].item<double>();
  return std::min(t107, by_power);
}

// ||Q^T Q - I|| (largest entry) of a matrix with orthonormal columns.
inline double orthogonality_loss(const at::Tensor& q) {
  const at::Tensor q64 = q.cpu().to(at::kDouble);
  return (at::mm(q64.t(), q64) - at::eye(q64.size(1), at::kDouble)).abs().max().item<double>();
}

inline double unit_roundoff(at::ScalarType dtype) {
  return dtype == at::kDouble ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
}

}  // namespace mlagpt::testing
