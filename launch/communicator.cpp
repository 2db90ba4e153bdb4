#include "launch/communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "launch/error.h"

namespace mlagpt::launch {

void check_collective_tensor(const at::Tensor& tensor, const char* what) {
  if (!tensor.defined()) {
    throw Error(fmt::format("{}: the tensor is undefined", what));
  }
  if (!tensor.is_contiguous()) {
    throw Error(fmt::format("{}: the tensor must be contiguous (sizes {})", what, fmt::join(tensor.sizes(), "x")));
  }
}

void check_reduce_scatter_shapes(const at::Tensor& input, const at::Tensor& output, int ranks) {
  if (input.numel() % ranks != 0 || output.numel() * ranks != input.numel() ||
      output.scalar_type() != input.scalar_type()) {
    throw Error(fmt::format(
        "reduce_scatter: {} elements of {} in, {} of {} out: the input must be {} equal chunks of "
        "the output's size and dtype",
        input.numel(), c10::toString(input.scalar_type()), output.numel(), c10::toString(output.scalar_type()), ranks));
  }
}

std::unique_ptr<Work> Communicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  all_reduce(tensor, op);
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> Communicator::reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  reduce_scatter(input, output, op);
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> Communicator::all_gather_async(const at::Tensor& input, at::Tensor& output) {
  all_gather(input, output);
  return std::make_unique<CompletedWork>();
}

void LocalCommunicator::all_reduce(at::Tensor& tensor, ReduceOp /*op*/) {
  check_collective_tensor(tensor, "all_reduce");
}

void LocalCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_collective_tensor(tensor, "broadcast");
  if (root != 0) {
    throw Error(fmt::format("broadcast: root {} does not exist in a group of 1", root));
  }
}

void LocalCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  check_collective_tensor(input, "all_gather");
  check_collective_tensor(output, "all_gather");
  if (output.numel() != input.numel()) {
    throw Error(fmt::format("all_gather: output holds {} elements, expected {}", output.numel(), input.numel()));
  }
  output.view(input.sizes()).copy_(input);
}

void LocalCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp /*op*/) {
  check_collective_tensor(input, "reduce_scatter");
  check_collective_tensor(output, "reduce_scatter");
  check_reduce_scatter_shapes(input, output, 1);
  output.view(input.sizes()).copy_(input);
}

}  // namespace mlagpt::launch
