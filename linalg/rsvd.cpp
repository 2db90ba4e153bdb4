#include "linalg/rsvd.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/randn.h>

#include <fmt/format.h>

#include "launch/communicator.h"
#include "linalg/sharded_rsvd.h"

namespace mlagpt::linalg {

std::string RsvdResult::describe() const {
  const int64_t k = s.defined() ? s.size(0) : 0;
  if (exact) {
    return fmt::format("exact SVD (k + p >= min(m, n)), k = {}", k);
  }
  return fmt::format("randomized SVD, k = {}, sketch {}, {} power iteration{}", k, sketch_width, power_iters,
                     power_iters == 1 ? "" : "s");
}

RsvdResult rsvd(const at::Tensor& a, const RsvdOptions& options) {
  launch::LocalCommunicator local;
  return sharded_rsvd(a, Split::kRows, local, options);
}

at::Tensor gaussian_sketch(int64_t rows, int64_t cols, uint64_t seed, at::ScalarType dtype, at::Device device) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({rows, cols}, generator, at::TensorOptions().dtype(dtype)).to(device);
}

}  // namespace mlagpt::linalg
