// How often a training step makes the host wait for the device, counted on the CPU. Two kinds of read exist: the
// Trainer's reads of the step reports (read_step_reports, one copy per read, at logged steps), and any .item() (every
// tensor-to-scalar conversion ends in aten::_local_scalar_dense, whose CPU kernel this file replaces with a counting
// one; the CPU AdamW kernel's own reads of its step count are left out, see below). In steady state a step must do
// neither: 24 steps cost as many .item() calls as 12, and the reports are read once per run.log_every steps (and at
// step 1 and the last), not once per step.
#include <ATen/Dispatch.h>
#include <ATen/ops/_fused_adamw_native.h>
#include <gtest/gtest.h>
#include <torch/library.h>

#include <atomic>

#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/test_runtime.h"
#include "trainer/trainer.h"

namespace {

std::atomic<int64_t> item_calls{0};
// The CPU kernel of _fused_adamw_ reads each step count with .item(): a read of host memory that its CUDA kernel
// does on the device instead, so it is not counted.
thread_local bool inside_fused_adamw = false;

// What the CPU kernel computes (the value of a one-element tensor), plus the count.
at::Scalar counting_local_scalar_dense(const at::Tensor& self) {
  if (!inside_fused_adamw) {
    ++item_calls;
  }
  at::Scalar value;
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, self.scalar_type(), "counting_local_scalar_dense",
                             [&] { value = at::Scalar(*self.const_data_ptr<scalar_t>()); });
  return value;
}

void marked_fused_adamw(at::TensorList self, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                        at::TensorList max_exp_avg_sqs, at::TensorList state_steps, double lr, double beta1,
                        double beta2, double weight_decay, double eps, bool amsgrad, bool maximize,
                        const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  inside_fused_adamw = true;
  at::native::_fused_adamw_kernel_cpu_(self, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1,
                                       beta2, weight_decay, eps, amsgrad, maximize, grad_scale, found_inf);
  inside_fused_adamw = false;
}

TORCH_LIBRARY_IMPL(aten, CPU, m) {
  m.impl("_local_scalar_dense", counting_local_scalar_dense);
  m.impl("_fused_adamw_", marked_fused_adamw);
}

struct Count {
  int64_t items = 0;
  int64_t reads = 0;
};

class HostSync : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new mlagpt::testing::TempDir();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
  }
  static void TearDownTestSuite() { delete dir_; }

  static Count train(const std::string& run, int64_t steps, const std::string& zero) {
    const mlagpt::trainer::TrainConfig config =
        mlagpt::trainer::read_train_config({}, {"--run.out_dir=" + (*dir_ / run).string(),
                                                "--run.device=cpu",
                                                "--run.threads=1",
                                                "--run.max_steps=" + std::to_string(steps),
                                                "--run.log_every=4",
                                                "--data.dir=" + (*dir_ / "data").string(),
                                                "--data.batch_size=2",
                                                "--data.seq_len=16",
                                                "--model.vocab_size=257",
                                                "--model.block_size=16",
                                                "--model.n_layer=2",
                                                "--model.n_embd=32",
                                                "--model.n_head=4",
                                                "--model.kv_lora_rank=16",
                                                "--model.qk_nope_head_dim=8",
                                                "--model.qk_rope_head_dim=4",
                                                "--model.v_head_dim=8",
                                                "--optim.grad_accum=2",
                                                "--schedule.warmup_steps=2",
                                                "--parallel.bucket_mb=0.01",
                                                "--parallel.zero=" + zero,
                                                "--eval.every=0",
                                                "--checkpoint.every=0",
                                                "--monitoring.jsonl=false"});
    mlagpt::trainer::Trainer trainer(config, mlagpt::testing::runtime());
    const int64_t items = item_calls.load();
    const int64_t reads = mlagpt::trainer::step_report_reads();
    EXPECT_EQ(trainer.train(""), 0);
    return {item_calls.load() - items, mlagpt::trainer::step_report_reads() - reads};
  }

  static inline mlagpt::testing::TempDir* dir_ = nullptr;
};

TEST_F(HostSync, StepsDoNotWaitForTheDeviceBetweenLoggedSteps) {
  for (const std::string zero : {"0", "1"}) {
    const Count twelve = train("twelve_" + zero, 12, zero);
    const Count twenty_four = train("twenty_four_" + zero, 24, zero);
    // Reads at step 1 and every 4th step (12 is one of them).
    EXPECT_EQ(twelve.reads, 1 + 12 / 4) << "zero " << zero;
    EXPECT_EQ(twenty_four.reads, 1 + 24 / 4) << "zero " << zero;
    EXPECT_EQ(twenty_four.items, twelve.items) << "zero " << zero << ": steps call .item()";
    EXPECT_GT(twelve.items, 0) << "the counting kernel is not in use";
  }
}

}  // namespace
