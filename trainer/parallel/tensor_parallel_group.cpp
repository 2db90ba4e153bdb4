#include "trainer/parallel/tensor_parallel_group.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <fmt/format.h>

#include <mutex>

#include "launch/error.h"

namespace mlagpt::trainer {

TensorParallelGroup::TensorParallelGroup(launch::Communicator& comm, const c10::Device& device)
    : comm_(comm), device_(device) {
  if (comm_.size() == 1) {
    return;
  }
  cpu_ = at::detail::createCPUGenerator();
  if (device_.is_cuda()) {
    cuda_ = at::detail::getCUDAHooks().getNewGenerator(device_.index());
  }
}

at::Generator TensorParallelGroup::sharded_generator(const c10::Device& device) const {
  if (comm_.size() == 1) {
    return {};
  }
  if (device.is_cpu()) {
    return cpu_;
  }
  // An index of -1 is the current device, which the mesh made device_.
  if (device.is_cuda() && cuda_.defined() && (!device.has_index() || device.index() == device_.index())) {
    return cuda_;
  }
  throw Error(fmt::format("TensorParallelGroup: no sharded generator for device {}; the group was made for {}",
                          device.str(), device_.str()));
}

void TensorParallelGroup::seed_sharded(uint64_t seed) {
  for (at::Generator* generator : {&cpu_, &cuda_}) {
    if (generator->defined()) {
      const std::scoped_lock lock(generator->mutex());
      generator->set_current_seed(seed);
    }
  }
}

}  // namespace mlagpt::trainer
