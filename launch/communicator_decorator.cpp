#include "launch/communicator_decorator.h"

#include <utility>

namespace mlagpt::launch {
namespace {

int64_t bytes_of(const at::Tensor& tensor) {
  return tensor.defined() ? static_cast<int64_t>(tensor.nbytes()) : 0;
}

}  // namespace

const char* to_string(CollectiveKind kind, bool async) {
  switch (kind) {
    case CollectiveKind::kAllReduce: return async ? "all_reduce_async" : "all_reduce";
    case CollectiveKind::kBroadcast: return "broadcast";
    case CollectiveKind::kAllGather: return async ? "all_gather_async" : "all_gather";
    case CollectiveKind::kReduceScatter: return async ? "reduce_scatter_async" : "reduce_scatter";
    case CollectiveKind::kBarrier: return "barrier";
  }
  return "unknown";
}

CommunicatorDecorator::CommunicatorDecorator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

void CommunicatorDecorator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  blocking(CollectiveKind::kAllReduce, bytes_of(tensor), [&] { inner_->all_reduce(tensor, op); });
}

void CommunicatorDecorator::broadcast(at::Tensor& tensor, int root) {
  blocking(CollectiveKind::kBroadcast, bytes_of(tensor), [&] { inner_->broadcast(tensor, root); });
}

void CommunicatorDecorator::all_gather(const at::Tensor& input, at::Tensor& output) {
  blocking(CollectiveKind::kAllGather, bytes_of(output), [&] { inner_->all_gather(input, output); });
}

void CommunicatorDecorator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  blocking(CollectiveKind::kReduceScatter, bytes_of(input), [&] { inner_->reduce_scatter(input, output, op); });
}

void CommunicatorDecorator::barrier() {
  blocking(CollectiveKind::kBarrier, 0, [&] { inner_->barrier(); });
}

std::unique_ptr<Work> CommunicatorDecorator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  return async(CollectiveKind::kAllReduce, bytes_of(tensor), [&] { return inner_->all_reduce_async(tensor, op); });
}

std::unique_ptr<Work> CommunicatorDecorator::reduce_scatter_async(const at::Tensor& input, at::Tensor& output,
                                                                  ReduceOp op) {
  return async(CollectiveKind::kReduceScatter, bytes_of(input),
               [&] { return inner_->reduce_scatter_async(input, output, op); });
}

std::unique_ptr<Work> CommunicatorDecorator::all_gather_async(const at::Tensor& input, at::Tensor& output) {
  return async(CollectiveKind::kAllGather, bytes_of(output), [&] { return inner_->all_gather_async(input, output); });
}

}  // namespace mlagpt::launch
