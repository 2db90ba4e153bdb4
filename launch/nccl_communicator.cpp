#include "launch/nccl_communicator.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <fmt/format.h>

#include "launch/cuda_check.h"
#include "launch/mpi_check.h"

namespace mlagpt::launch {
namespace {

ncclComm_t as_nccl(void* comm) {
  return static_cast<ncclComm_t>(comm);
}

ncclDataType_t nccl_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    default: throw Error(fmt::format("NcclCommunicator: no NCCL type for dtype {}", c10::toString(type)));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  throw Error("NcclCommunicator: unknown reduce op");
}

cudaStream_t stream_of(const at::Tensor& tensor, const char* what) {
  check_collective_tensor(tensor, what);
  if (!tensor.is_cuda()) {
    throw Error(fmt::format("{}: NcclCommunicator takes CUDA tensors, got one on {}", what, tensor.device().str()));
  }
  return c10::cuda::getCurrentCUDAStream(tensor.device().index()).stream();
}

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm mpi_comm, int device) : device_(device) {
  if (mpi_comm != MPI_COMM_NULL) {
    MLAGPT_MPI_CHECK(MPI_Comm_rank(mpi_comm, &rank_));
    MLAGPT_MPI_CHECK(MPI_Comm_size(mpi_comm, &size_));
  }
  ncclUniqueId id;
  if (rank_ == 0) {
    MLAGPT_NCCL_CHECK(ncclGetUniqueId(&id));
  }
  if (mpi_comm != MPI_COMM_NULL) {
    MLAGPT_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_comm));
  }
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  ncclComm_t comm = nullptr;
  MLAGPT_NCCL_CHECK(ncclCommInitRank(&comm, size_, id, rank_));
  comm_ = comm;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) {
    ncclCommDestroy(as_nccl(comm_));
  }
}

void NcclCommunicator::abort() {
  if (comm_ != nullptr) {
    ncclCommAbort(as_nccl(comm_));
    comm_ = nullptr;
  }
}

void NcclCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  cudaStream_t stream = stream_of(tensor, "all_reduce");
  MLAGPT_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                  nccl_type(tensor.scalar_type()), nccl_op(op), as_nccl(comm_), stream));
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  cudaStream_t stream = stream_of(tensor, "broadcast");
  MLAGPT_NCCL_CHECK(
      ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, root, as_nccl(comm_), stream));
}

void NcclCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  cudaStream_t stream = stream_of(input, "all_gather");
  stream_of(output, "all_gather");
  if (output.numel() != input.numel() * size_ || output.scalar_type() != input.scalar_type()) {
    throw Error(fmt::format("all_gather: output must hold {} x {} elements of {}", size_, input.numel(),
                            c10::toString(input.scalar_type())));
  }
  MLAGPT_NCCL_CHECK(
      ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, as_nccl(comm_), stream));
}

void NcclCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  cudaStream_t stream = stream_of(input, "reduce_scatter");
  stream_of(output, "reduce_scatter");
  check_reduce_scatter_shapes(input, output, size_);
  MLAGPT_NCCL_CHECK(ncclReduceScatter(input.data_ptr(), output.data_ptr(), static_cast<size_t>(output.numel()),
                                      nccl_type(input.scalar_type()), nccl_op(op), as_nccl(comm_), stream));
}

void NcclCommunicator::barrier() {
  // A one-element all-reduce orders every rank's stream; synchronizing it makes the host wait for all of them.
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
  float* scratch = nullptr;
  MLAGPT_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&scratch), sizeof(float), stream));
  MLAGPT_NCCL_CHECK(ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, as_nccl(comm_), stream));
  MLAGPT_CUDA_CHECK(cudaFreeAsync(scratch, stream));
  MLAGPT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace mlagpt::launch
