#include "launch/nccl_communicator.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>
#include <vector>

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

// The checks of one collective's arguments, shared by its blocking and async versions, which throw before anything
// is enqueued.
void check_cuda(const at::Tensor& tensor, int device, const char* what) {
  check_collective_tensor(tensor, what);
  if (!tensor.is_cuda() || tensor.device().index() != device) {
    throw Error(fmt::format("{}: NcclCommunicator on cuda:{} takes CUDA tensors of that device, got one on {}", what,
                            device, tensor.device().str()));
  }
}

struct NcclReduction {
  ncclDataType_t type;
  ncclRedOp_t op;
};

NcclReduction check_all_reduce(const at::Tensor& tensor, ReduceOp op, int device) {
  check_cuda(tensor, device, "all_reduce");
  return {nccl_type(tensor.scalar_type()), nccl_op(op)};
}

NcclReduction check_reduce_scatter(const at::Tensor& input, const at::Tensor& output, ReduceOp op, int ranks,
                                   int device) {
  check_cuda(input, device, "reduce_scatter");
  check_cuda(output, device, "reduce_scatter");
  check_reduce_scatter_shapes(input, output, ranks);
  return {nccl_type(input.scalar_type()), nccl_op(op)};
}

void check_all_gather(const at::Tensor& input, const at::Tensor& output, int ranks, int device) {
  check_cuda(input, device, "all_gather");
  check_cuda(output, device, "all_gather");
  if (output.numel() != input.numel() * ranks || output.scalar_type() != input.scalar_type()) {
    throw Error(fmt::format("all_gather: output must hold {} x {} elements of {}", ranks, input.numel(),
                            c10::toString(input.scalar_type())));
  }
}

// A CUDA event without timing. Destroying one that is recorded but not reached is allowed (CUDA releases it once
// it is reached), and streams that already wait for it keep waiting.
class Event {
 public:
  Event() { MLAGPT_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() {
    if (event_ != nullptr) {
      cudaEventDestroy(event_);
    }
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&&) = delete;

  void record(cudaStream_t stream) { MLAGPT_CUDA_CHECK(cudaEventRecord(event_, stream)); }
  // Makes `stream` wait for the work before the last record(), without blocking the host.
  void block(cudaStream_t stream) const { MLAGPT_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }
  bool query() const {
    const cudaError_t rc = cudaEventQuery(event_);
    if (rc == cudaErrorNotReady) {
      return false;
    }
    MLAGPT_CUDA_CHECK(rc);
    return true;
  }

 private:
  cudaEvent_t event_ = nullptr;
};

c10::cuda::CUDAStream as_cuda(const c10::Stream& stream) {
  return c10::cuda::CUDAStream(c10::cuda::CUDAStream::UNCHECKED, stream);
}

// Enqueues `op` on the comm stream after everything already on the caller's current stream of its device, and
// tells the caching allocator that `tensors` are used there (so their memory is not handed out again before the
// comm stream is done with it, whichever stream frees them). Returns an event recorded after `op`, shared so that the
// watchdog's probe can outlive the call.
template <typename Op>
std::shared_ptr<Event> enqueue_on(c10::cuda::CUDAStream comm, const std::vector<at::Tensor>& tensors, Op&& op) {
  const c10::cuda::CUDAGuard guard(comm.device_index());
  Event ready;
  ready.record(c10::cuda::getCurrentCUDAStream(comm.device_index()).stream());
  ready.block(comm.stream());
  for (const at::Tensor& tensor : tensors) {
    c10::cuda::CUDACachingAllocator::recordStream(tensor.storage().data_ptr(), comm);
  }
  std::forward<Op>(op)(comm.stream());
  auto done = std::make_shared<Event>();
  done->record(comm.stream());
  return done;
}

// Makes the caller's current stream of the comm stream's device wait for `done`.
void join_current(const Event& done, c10::cuda::CUDAStream comm) {
  done.block(c10::cuda::getCurrentCUDAStream(comm.device_index()).stream());
}

// A collective enqueued on the comm stream. Holds its tensors until it is destroyed; the caching allocator also
// knows they are in use there (enqueue_on), so dropping the Work early is safe too.
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<Event> done, std::vector<at::Tensor> tensors, c10::cuda::CUDAStream comm)
      : done_(std::move(done)), tensors_(std::move(tensors)), comm_(comm) {}
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;
  ~NcclWork() override = default;

  // Orders the current stream at the time of the call, which need not be the one the collective was issued from.
  void wait() override {
    const c10::cuda::CUDAGuard guard(comm_.device_index());
    join_current(*done_, comm_);
  }
  bool test() override {
    const c10::cuda::CUDAGuard guard(comm_.device_index());
    return done_->query();
  }

 private:
  std::shared_ptr<Event> done_;
  std::vector<at::Tensor> tensors_;
  c10::cuda::CUDAStream comm_;
};

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm mpi_comm, int device)
    : device_(device),
      comm_stream_(c10::Stream::DEFAULT, c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device))) {
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
  comm_stream_ = c10::cuda::getStreamFromPool(/*isHighPriority=*/true, static_cast<c10::DeviceIndex>(device_));
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr && !aborted_) {
    ncclCommDestroy(as_nccl(comm_));
  }
}

void NcclCommunicator::abort() {
  if (comm_ != nullptr && !aborted_.exchange(true)) {
    ncclCommAbort(as_nccl(comm_));
  }
}

std::function<bool()> NcclCommunicator::last_collective_done() const {
  if (!last_done_) {
    return {};
  }
  const int device = device_;
  return [done = std::static_pointer_cast<Event>(last_done_), device] {
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    return done->query();
  };
}

std::string NcclCommunicator::async_error() const {
  if (comm_ == nullptr || aborted_) {
    return {};
  }
  ncclResult_t result = ncclSuccess;
  const ncclResult_t rc = ncclCommGetAsyncError(as_nccl(comm_), &result);
  if (rc != ncclSuccess) {
    return fmt::format("ncclCommGetAsyncError failed: {}", ncclGetErrorString(rc));
  }
  if (result == ncclSuccess || result == ncclInProgress) {
    return {};
  }
  return fmt::format("NCCL asynchronous error: {} ({})", ncclGetErrorString(result), ncclGetLastError(as_nccl(comm_)));
}

void NcclCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  const NcclReduction reduction = check_all_reduce(tensor, op, device_);
  const auto done = enqueue_on(as_cuda(comm_stream_), {tensor}, [&](cudaStream_t stream) {
    MLAGPT_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                    reduction.type, reduction.op, as_nccl(comm_), stream));
  });
  last_done_ = done;
  join_current(*done, as_cuda(comm_stream_));
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_cuda(tensor, device_, "broadcast");
  const auto done = enqueue_on(as_cuda(comm_stream_), {tensor}, [&](cudaStream_t stream) {
    MLAGPT_NCCL_CHECK(
        ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, root, as_nccl(comm_), stream));
  });
  last_done_ = done;
  join_current(*done, as_cuda(comm_stream_));
}

void NcclCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  check_all_gather(input, output, size_, device_);
  const auto done = enqueue_on(as_cuda(comm_stream_), {input, output}, [&](cudaStream_t stream) {
    MLAGPT_NCCL_CHECK(
        ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, as_nccl(comm_), stream));
  });
  last_done_ = done;
  join_current(*done, as_cuda(comm_stream_));
}

void NcclCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  const NcclReduction reduction = check_reduce_scatter(input, output, op, size_, device_);
  const auto done = enqueue_on(as_cuda(comm_stream_), {input, output}, [&](cudaStream_t stream) {
    MLAGPT_NCCL_CHECK(ncclReduceScatter(input.data_ptr(), output.data_ptr(), static_cast<size_t>(output.numel()),
                                        reduction.type, reduction.op, as_nccl(comm_), stream));
  });
  last_done_ = done;
  join_current(*done, as_cuda(comm_stream_));
}

void NcclCommunicator::barrier() {
  // A one-element all-reduce on the comm stream orders every rank's; synchronizing it makes the host wait for all of
  // them (and, since the comm stream waited for the current stream first, for this rank's queued work).
  const c10::cuda::CUDAStream comm = as_cuda(comm_stream_);
  last_done_ = enqueue_on(comm, {}, [&](cudaStream_t stream) {
    float* scratch = nullptr;
    MLAGPT_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&scratch), sizeof(float), stream));
    MLAGPT_NCCL_CHECK(ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, as_nccl(comm_), stream));
    MLAGPT_CUDA_CHECK(cudaFreeAsync(scratch, stream));
  });
  MLAGPT_CUDA_CHECK(cudaStreamSynchronize(comm.stream()));
}

std::unique_ptr<Work> NcclCommunicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  const NcclReduction reduction = check_all_reduce(tensor, op, device_);
  auto done = enqueue_on(as_cuda(comm_stream_), {tensor}, [&](cudaStream_t stream) {
    MLAGPT_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                    reduction.type, reduction.op, as_nccl(comm_), stream));
  });
  last_done_ = done;
  return std::make_unique<NcclWork>(std::move(done), std::vector<at::Tensor>{tensor}, as_cuda(comm_stream_));
}

std::unique_ptr<Work> NcclCommunicator::reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  const NcclReduction reduction = check_reduce_scatter(input, output, op, size_, device_);
  auto done = enqueue_on(as_cuda(comm_stream_), {input, output}, [&](cudaStream_t stream) {
    MLAGPT_NCCL_CHECK(ncclReduceScatter(input.data_ptr(), output.data_ptr(), static_cast<size_t>(output.numel()),
                                        reduction.type, reduction.op, as_nccl(comm_), stream));
  });
  last_done_ = done;
  return std::make_unique<NcclWork>(std::move(done), std::vector<at::Tensor>{input, output}, as_cuda(comm_stream_));
}

std::unique_ptr<Work> NcclCommunicator::all_gather_async(const at::Tensor& input, at::Tensor& output) {
  check_all_gather(input, output, size_, device_);
  auto done = enqueue_on(as_cuda(comm_stream_), {input, output}, [&](cudaStream_t stream) {
    MLAGPT_NCCL_CHECK(
        ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, as_nccl(comm_), stream));
  });
  last_done_ = done;
  return std::make_unique<NcclWork>(std::move(done), std::vector<at::Tensor>{input, output}, as_cuda(comm_stream_));
}

}  // namespace mlagpt::launch
