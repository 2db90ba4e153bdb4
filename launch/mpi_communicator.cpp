#include "launch/mpi_communicator.h"

#include <ATen/ops/empty_like.h>

#include <cstdio>
#include <limits>
#include <utility>
#include <vector>

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

// The tensor MPI reduces in place of `tensor`: itself, or a float32 copy of a half or bfloat16 one.
at::Tensor reduction_buffer(const at::Tensor& tensor) {
  return is_reduced_precision(tensor.scalar_type()) ? tensor.to(at::kFloat) : tensor;
}

// What one reduction hands to MPI. The check_* functions below validate a collective's arguments the same way for
// the blocking and the async version, before either copies or starts anything, and say what to pass to MPI.
struct MpiReduction {
  int count;
  MPI_Datatype type;
  MPI_Op op;
};

MpiReduction check_all_reduce(const at::Tensor& tensor, ReduceOp op) {
  check_cpu(tensor, "all_reduce");
  const at::ScalarType wire = is_reduced_precision(tensor.scalar_type()) ? at::kFloat : tensor.scalar_type();
  return {mpi_count(tensor.numel(), "all_reduce"), mpi_type(wire), mpi_op(op)};
}

MpiReduction check_reduce_scatter(const at::Tensor& input, const at::Tensor& output, ReduceOp op, int ranks) {
  check_cpu(input, "reduce_scatter");
  check_cpu(output, "reduce_scatter");
  check_reduce_scatter_shapes(input, output, ranks);
  const at::ScalarType wire = is_reduced_precision(input.scalar_type()) ? at::kFloat : input.scalar_type();
  return {mpi_count(output.numel(), "reduce_scatter"), mpi_type(wire), mpi_op(op)};
}

// Returns the bytes each rank contributes (all-gather moves bytes, so any dtype works).
int check_all_gather(const at::Tensor& input, const at::Tensor& output, int ranks) {
  check_cpu(input, "all_gather");
  check_cpu(output, "all_gather");
  if (output.numel() != input.numel() * ranks || output.scalar_type() != input.scalar_type()) {
    throw Error(fmt::format("all_gather: output must hold {} x {} elements of {}", ranks, input.numel(),
                            c10::toString(input.scalar_type())));
  }
  return mpi_count(static_cast<int64_t>(input.nbytes()), "all_gather");
}

// A non-blocking MPI collective. Holds every tensor MPI reads or writes until the operation has completed, and
// then copies the float32 result of a half/bfloat16 collective into the caller's tensor.
class MpiWork final : public Work {
 public:
  // `buffers`: what MPI uses. When `result` is defined, it is copied into `destination` on completion.
  MpiWork(std::vector<at::Tensor> buffers, at::Tensor result, at::Tensor destination)
      : buffers_(std::move(buffers)), result_(std::move(result)), destination_(std::move(destination)) {}
  MpiWork(const MpiWork&) = delete;
  MpiWork& operator=(const MpiWork&) = delete;

  // Waits, so that MPI never writes into tensors freed after the Work. Errors cannot be thrown from here: they are
  // printed. Without MPI any more (after MPI_Finalize) there is nothing to wait for.
  ~MpiWork() override {
    if (request_ == MPI_REQUEST_NULL) {
      return;
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized != 0) {
      return;
    }
    const int rc = MPI_Wait(&request_, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      try {
        fmt::print(stderr, "[comm] {}: an unfinished MPI collective failed while its Work was destroyed: {}\n",
                   process_description(), mpi_error_string(rc));
      } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw, and stderr is all there is
      }
    }
  }

  MPI_Request* request() { return &request_; }

  void wait() override {
    if (done_) {
      return;
    }
    MLAGPT_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
    finish();
  }

  bool test() override {
    if (done_) {
      return true;
    }
    int completed = 0;
    MLAGPT_MPI_CHECK(MPI_Test(&request_, &completed, MPI_STATUS_IGNORE));
    if (completed != 0) {
      finish();
    }
    return done_;
  }

 private:
  void finish() {
    if (result_.defined()) {
      destination_.copy_(result_);
    }
    done_ = true;
    buffers_.clear();
    result_.reset();
    destination_.reset();
  }

  MPI_Request request_ = MPI_REQUEST_NULL;  // MPI resets it to MPI_REQUEST_NULL once the operation has completed
  std::vector<at::Tensor> buffers_;
  at::Tensor result_;
  at::Tensor destination_;
  bool done_ = false;
};

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
  const MpiReduction reduction = check_all_reduce(tensor, op);
  at::Tensor buffer = reduction_buffer(tensor);
  MLAGPT_MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, buffer.data_ptr(), reduction.count, reduction.type, reduction.op, comm_));
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  }
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_cpu(tensor, "broadcast");
  // Broadcast moves bytes, so any dtype works.
  MLAGPT_MPI_CHECK(MPI_Bcast(tensor.data_ptr(), mpi_count(static_cast<int64_t>(tensor.nbytes()), "broadcast"), MPI_BYTE,
                             root, comm_));
}

void MpiCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  const int bytes = check_all_gather(input, output, size_);
  MLAGPT_MPI_CHECK(MPI_Allgather(input.data_ptr(), bytes, MPI_BYTE, output.data_ptr(), bytes, MPI_BYTE, comm_));
}

void MpiCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  const MpiReduction reduction = check_reduce_scatter(input, output, op, size_);
  const at::Tensor send = reduction_buffer(input);
  at::Tensor receive = is_reduced_precision(output.scalar_type()) ? at::empty_like(output, at::kFloat) : output;
  MLAGPT_MPI_CHECK(MPI_Reduce_scatter_block(send.data_ptr(), receive.data_ptr(), reduction.count, reduction.type,
                                            reduction.op, comm_));
  if (!receive.is_same(output)) {
    output.copy_(receive);
  }
}

void MpiCommunicator::barrier() {
  MLAGPT_MPI_CHECK(MPI_Barrier(comm_));
}

std::unique_ptr<Work> MpiCommunicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  const MpiReduction reduction = check_all_reduce(tensor, op);
  at::Tensor buffer = reduction_buffer(tensor);
  const bool widened = !buffer.is_same(tensor);
  auto work = std::make_unique<MpiWork>(std::vector<at::Tensor>{tensor, buffer}, widened ? buffer : at::Tensor(),
                                        widened ? tensor : at::Tensor());
  MLAGPT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buffer.data_ptr(), reduction.count, reduction.type, reduction.op, comm_,
                                  work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  const MpiReduction reduction = check_reduce_scatter(input, output, op, size_);
  const at::Tensor send = reduction_buffer(input);
  at::Tensor receive = is_reduced_precision(output.scalar_type()) ? at::empty_like(output, at::kFloat) : output;
  const bool widened = !receive.is_same(output);
  auto work = std::make_unique<MpiWork>(std::vector<at::Tensor>{input, output, send, receive},
                                        widened ? receive : at::Tensor(), widened ? output : at::Tensor());
  MLAGPT_MPI_CHECK(MPI_Ireduce_scatter_block(send.data_ptr(), receive.data_ptr(), reduction.count, reduction.type,
                                             reduction.op, comm_, work->request()));
  return work;
}

std::unique_ptr<Work> MpiCommunicator::all_gather_async(const at::Tensor& input, at::Tensor& output) {
  const int bytes = check_all_gather(input, output, size_);
  auto work = std::make_unique<MpiWork>(std::vector<at::Tensor>{input, output}, at::Tensor(), at::Tensor());
  MLAGPT_MPI_CHECK(
      MPI_Iallgather(input.data_ptr(), bytes, MPI_BYTE, output.data_ptr(), bytes, MPI_BYTE, comm_, work->request()));
  return work;
}

}  // namespace mlagpt::launch
