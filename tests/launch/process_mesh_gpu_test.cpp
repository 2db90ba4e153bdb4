// gpu: the mesh of one process on a CUDA device: the device it is given becomes the process's current device, and
// its groups (of one, so LocalCommunicators) take CUDA tensors.
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>

#include "launch/backend_versions.h"
#include "launch/process_mesh.h"
#include "support/prerequisites.h"
#include "support/test_runtime.h"

TEST(ProcessMeshGpu, MakesItsDeviceCurrentAndReducesCudaTensors) {
  const int gpus = mlagpt::launch::cuda_device_count();
  MLAGPT_REQUIRE_GPU(gpus > 0, "no CUDA device: the CUDA mesh test needs one");
  ASSERT_FALSE(mlagpt::testing::runtime().info().mpi) << "this test runs without mpiexec";
  const c10::Device device(c10::kCUDA, static_cast<c10::DeviceIndex>(gpus - 1));
  c10::cuda::set_device(0);
  mlagpt::launch::ProcessMesh mesh(mlagpt::testing::runtime(), {.tp = 1, .device = device});
  EXPECT_EQ(c10::cuda::current_device(), gpus - 1);
  EXPECT_EQ(mesh.device(), device);
  EXPECT_EQ(mesh.describe(), "world 1 = dp 1 x tp 1, local");
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor t = at::arange(1000, options);
  mesh.dp().all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  at::Tensor gathered = at::zeros({1000}, options);
  mesh.tp().all_gather(t, gathered);
  EXPECT_TRUE(at::equal(gathered.cpu(), at::arange(1000, at::kFloat)));
}
