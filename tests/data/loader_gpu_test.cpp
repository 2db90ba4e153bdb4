// The loader with a CUDA target: batches (assembled in pinned memory, copied without blocking) land on the device
// and hold exactly what the CPU loader yields, for training and for the validation pass.
#include <ATen/Context.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include "data/loader.h"
#include "data/token_shard.h"
#include "support/prerequisites.h"
#include "support/temp_dir.h"

namespace {

std::filesystem::path write_shard(const std::filesystem::path& path, int64_t tokens) {
  std::vector<int32_t> document(static_cast<size_t>(tokens));
  for (int64_t p = 0; p < tokens; ++p) {
    document[static_cast<size_t>(p)] = static_cast<int32_t>(p % 50000);
  }
  mlagpt::data::ShardWriter writer(path, {50304, 50303, "byte", std::string(64, 'a')}, tokens, 1);
  writer.add_document(document);
  writer.finish();
  return path;
}

mlagpt::data::LoaderConfig config(const std::filesystem::path& shard, c10::Device device) {
  mlagpt::data::LoaderConfig c;
  c.shards = {shard};
  c.batch_size = 4;
  c.seq_len = 64;
  c.seed = 3;
  c.device = device;
  return c;
}

}  // namespace

TEST(LoaderGpu, CudaBatchesEqualTheCpuLoaders) {
  MLAGPT_REQUIRE_GPU(at::hasCUDA(), "no CUDA device");
  mlagpt::testing::TempDir dir;
  const auto shard = write_shard(dir / "train_00000.h5", 20000);
  const c10::Device cuda(c10::kCUDA, 0);
  mlagpt::data::TokenLoader on_cpu(config(shard, c10::Device(c10::kCPU)));
  mlagpt::data::TokenLoader on_gpu(config(shard, cuda));
  for (int step = 0; step < 100; ++step) {  // across the epoch boundary (78 steps of 4)
    const auto expected = on_cpu.next();
    const auto batch = on_gpu.next();
    ASSERT_TRUE(batch.x.is_cuda() && batch.y.is_cuda());
    EXPECT_TRUE(at::equal(batch.x.cpu(), expected.x) && at::equal(batch.y.cpu(), expected.y)) << "step " << step;
  }
  mlagpt::data::ValidationPass val_cpu(config(shard, c10::Device(c10::kCPU)));
  mlagpt::data::ValidationPass val_gpu(config(shard, cuda));
  while (!val_cpu.done()) {
    const auto expected = val_cpu.next();
    const auto batch = val_gpu.next();
    ASSERT_TRUE(batch.batch.x.is_cuda());
    EXPECT_EQ(batch.last, expected.last);
    EXPECT_TRUE(at::equal(batch.batch.x.cpu(), expected.batch.x) && at::equal(batch.batch.y.cpu(), expected.batch.y));
  }
}
