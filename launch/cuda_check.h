// Checks for the CUDA runtime, NCCL and cuSOLVER: each runs the call and throws the matching mlagpt error type with
// the library's error string, the expression, file, line, rank and host. Only for code built with MLAGPT_WITH_CUDA.
#pragma once

#include <cuda_runtime_api.h>
#include <cusolverDn.h>
#include <nccl.h>

#include <string>

#include "launch/error.h"

namespace mlagpt::launch {
std::string cusolver_status_name(cusolverStatus_t status);
}  // namespace mlagpt::launch

#define MLAGPT_CUDA_CHECK(call)                                                                                \
  do {                                                                                                         \
    const cudaError_t mlagpt_cuda_rc_ = (call);                                                                \
    if (mlagpt_cuda_rc_ != cudaSuccess) {                                                                      \
      throw ::mlagpt::CudaError(                                                                               \
          ::mlagpt::describe_failure("CUDA", #call, cudaGetErrorString(mlagpt_cuda_rc_), __FILE__, __LINE__)); \
    }                                                                                                          \
  } while (0)

#define MLAGPT_NCCL_CHECK(call)                                                                                \
  do {                                                                                                         \
    const ncclResult_t mlagpt_nccl_rc_ = (call);                                                               \
    if (mlagpt_nccl_rc_ != ncclSuccess) {                                                                      \
      throw ::mlagpt::NcclError(                                                                               \
          ::mlagpt::describe_failure("NCCL", #call, ncclGetErrorString(mlagpt_nccl_rc_), __FILE__, __LINE__)); \
    }                                                                                                          \
  } while (0)

#define MLAGPT_CUSOLVER_CHECK(call)                                                                             \
  do {                                                                                                          \
    const cusolverStatus_t mlagpt_cusolver_rc_ = (call);                                                        \
    if (mlagpt_cusolver_rc_ != CUSOLVER_STATUS_SUCCESS) {                                                       \
      throw ::mlagpt::CusolverError(::mlagpt::describe_failure(                                                 \
          "cuSOLVER", #call, ::mlagpt::launch::cusolver_status_name(mlagpt_cusolver_rc_), __FILE__, __LINE__)); \
    }                                                                                                           \
  } while (0)
