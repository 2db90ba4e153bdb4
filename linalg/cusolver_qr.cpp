// cuSOLVER Householder QR. cuSOLVER is column-major: a row-major [m, n] tensor transposed and made contiguous is
// the column-major m x n matrix, so the factorization runs in place in that buffer ([n, m] row-major) and Q and R
// are read back through transposed views.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <fmt/format.h>

#include <climits>
#include <map>

#include "launch/cuda_check.h"
#include "linalg/qr.h"

namespace mlagpt::linalg {
namespace {

// One handle per (thread, device): creating one costs milliseconds and a handle is not thread-safe.
cusolverDnHandle_t handle_for(int device) {
  struct Handles {
    std::map<int, cusolverDnHandle_t> by_device;
    ~Handles() {
      for (auto& [device, handle] : by_device) {
        cusolverDnDestroy(handle);
      }
    }
  };
  thread_local Handles handles;
  auto it = handles.by_device.find(device);
  if (it == handles.by_device.end()) {
    cusolverDnHandle_t handle = nullptr;
    MLAGPT_CUSOLVER_CHECK(cusolverDnCreate(&handle));
    it = handles.by_device.emplace(device, handle).first;
  }
  return it->second;
}

void check_info(const at::Tensor& info, const char* routine) {
  const int value = info.item<int>();
  if (value != 0) {
    throw CusolverError(
        fmt::format("cuSOLVER {}: parameter {} had an illegal value (info = {})", routine, -value, value));
  }
}

}  // namespace

QrFactors cusolver_qr(const at::Tensor& a, bool check) {
  const int64_t m = a.size(0);
  const int64_t n = a.size(1);
  if (m > INT_MAX || n > INT_MAX) {
    throw Error(fmt::format("cusolver_qr: {} x {} exceeds orgqr's 32-bit sizes", m, n));
  }
  const c10::cuda::CUDAGuard guard(a.device());
  const bool is_double = a.scalar_type() == at::kDouble;
  const cudaDataType type = is_double ? CUDA_R_64F : CUDA_R_32F;
  cusolverDnHandle_t handle = handle_for(a.device().index());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(a.device().index()).stream();
  MLAGPT_CUSOLVER_CHECK(cusolverDnSetStream(handle, stream));

  at::Tensor work = a.t().contiguous();  // [n, m] row-major == A column-major, lda = m
  at::Tensor tau = at::empty({n}, a.options());
  at::Tensor info = at::empty({1}, a.options().dtype(at::kInt));

  cusolverDnParams_t params = nullptr;
  MLAGPT_CUSOLVER_CHECK(cusolverDnCreateParams(&params));
  size_t device_bytes = 0;
  size_t host_bytes = 0;
  MLAGPT_CUSOLVER_CHECK(cusolverDnXgeqrf_bufferSize(handle, params, m, n, type, work.data_ptr(), m, type,
                                                    tau.data_ptr(), type, &device_bytes, &host_bytes));
  at::Tensor device_buffer = at::empty({static_cast<int64_t>(device_bytes) + 1}, a.options().dtype(at::kByte));
  std::vector<char> host_buffer(host_bytes + 1);
  const cusolverStatus_t geqrf =
      cusolverDnXgeqrf(handle, params, m, n, type, work.data_ptr(), m, type, tau.data_ptr(), type,
                       device_buffer.data_ptr(), device_bytes, host_buffer.data(), host_bytes, info.data_ptr<int>());
  cusolverDnDestroyParams(params);
  MLAGPT_CUSOLVER_CHECK(geqrf);
  if (check) {
    check_info(info, "geqrf");
  }

  at::Tensor r = work.narrow(1, 0, n).t().triu();  // [n, n]: the upper triangle of the first n columns

  const int mi = static_cast<int>(m);
  const int ni = static_cast<int>(n);
  int lwork = 0;
  if (is_double) {
    MLAGPT_CUSOLVER_CHECK(
        cusolverDnDorgqr_bufferSize(handle, mi, ni, ni, work.data_ptr<double>(), mi, tau.data_ptr<double>(), &lwork));
    at::Tensor scratch = at::empty({lwork + 1}, a.options());
    MLAGPT_CUSOLVER_CHECK(cusolverDnDorgqr(handle, mi, ni, ni, work.data_ptr<double>(), mi, tau.data_ptr<double>(),
                                           scratch.data_ptr<double>(), lwork, info.data_ptr<int>()));
  } else {
    MLAGPT_CUSOLVER_CHECK(
        cusolverDnSorgqr_bufferSize(handle, mi, ni, ni, work.data_ptr<float>(), mi, tau.data_ptr<float>(), &lwork));
    at::Tensor scratch = at::empty({lwork + 1}, a.options());
    MLAGPT_CUSOLVER_CHECK(cusolverDnSorgqr(handle, mi, ni, ni, work.data_ptr<float>(), mi, tau.data_ptr<float>(),
                                           scratch.data_ptr<float>(), lwork, info.data_ptr<int>()));
  }
  if (check) {
    check_info(info, "orgqr");
  }
  return {work.t().contiguous(), r.contiguous()};  // Q: [m, n]
}

}  // namespace mlagpt::linalg
