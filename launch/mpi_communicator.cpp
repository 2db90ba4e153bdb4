#include "launch/mpi_communicator.h"

#include <ATen/ops/empty.h>

#include <limits>

#include <fmt/format.h>

#include "launch/mpi_check.h"

namespace mlagpt::launch {
namespace {

MPI_Datatype mpi_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kChar: return MPI_INT8_T;
    case at::kBool: return MPI_C_BOOL;
    default: throw Error(fmt::format("MpiCommunicator: no MPI type for dtype {}", c10::toString(type)));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  throw Error("MpiCommunicator: unknown reduce op");
}

void check_cpu(const at::Tensor& tensor, const char* what) {
  check_collective_tensor(tensor, what);
  if (!tensor.device().is_cpu()) {
    throw Error(fmt::format("{}: MpiCommunicator takes CPU tensors, got one on {}", what, tensor.device().str()));
  }
}

int mpi_count(int64_t count, const char* what) {
  if (count > std::numeric_limits<int>::max()) {
    throw Error(fmt::format("{}: {} elements exceed MPI's int count; split the tensor", what, count));
  }
  return static_cast<int>(count);
}

bool is_reduced_precision(at::ScalarType type) {
  return type == at::kHalf || type == at::kBFloat16;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  MLAGPT_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  MLAGPT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MLAGPT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MLAGPT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && finalized == 0) {
    MPI_Comm_free(&comm_);
  }
}

void MpiCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_cpu(tensor, "all_reduce");
  if (is_reduced_precision(tensor.scalar_type())) {
    at::Tensor wide = tensor.to(at::kFloat);
    all_reduce(wide, op);
    tensor.copy_(wide);
    return;
  }
  MLAGPT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), mpi_count(tensor.numel(), "all_reduce"),
                                 mpi_type(tensor.scalar_type()), mpi_op(op), comm_));
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_cpu(tensor, "broadcast");
  // Broadcast moves bytes, so any dtype works.
  MLAGPT_MPI_CHECK(MPI_Bcast(tensor.data_ptr(), mpi_count(static_cast<int64_t>(tensor.nbytes()), "broadcast"), MPI_BYTE,
                             root, comm_));
}

void MpiCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  check_cpu(input, "all_gather");
  check_cpu(output, "all_gather");
  if (output.numel() != input.numel() * size_ || output.scalar_type() != input.scalar_type()) {
    throw Error(fmt::format("all_gather: output must hold {} x {} elements of {}", size_, input.numel(),
                            c10::toString(input.scalar_type())));
  }
  MLAGPT_MPI_CHECK(MPI_Allgather(input.data_ptr(), mpi_count(static_cast<int64_t>(input.nbytes()), "all_gather"),
                                 MPI_BYTE, output.data_ptr(),
                                 mpi_count(static_cast<int64_t>(input.nbytes()), "all_gather"), MPI_BYTE, comm_));
}

void MpiCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  check_cpu(input, "reduce_scatter");
  check_cpu(output, "reduce_scatter");
  check_reduce_scatter_shapes(input, output, size_);
  if (is_reduced_precision(input.scalar_type())) {
    at::Tensor wide = output.to(at::kFloat);
    reduce_scatter(input.to(at::kFloat), wide, op);
    output.copy_(wide);
    return;
  }
  MLAGPT_MPI_CHECK(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(),
                                            mpi_count(output.numel(), "reduce_scatter"), mpi_type(input.scalar_type()),
                                            mpi_op(op), comm_));
}

void MpiCommunicator::barrier() {
  MLAGPT_MPI_CHECK(MPI_Barrier(comm_));
}

}  // namespace mlagpt::launch
