// What tensor parallelism communicates per transformer block, counted through the communicator, against the
// analytic figure of Megatron-LM's layout (issue 11). Not a CTest test (tests/trainer/tensor_parallel_model_test.cpp
// asserts the totals); this prints the table the closing note and docs/design.md quote.
//
// For each attention variant of a GPT-2-small-shaped model (d 768, 12 heads) under mpiexec -n TP, one forward and
// one backward of a [B, T] batch are run at n_layer 1 and 2, and the difference of the bytes all-reduced is the
// block's (the embedding, head and cross entropy cancel out), forward and backward separately. Megatron: a block
// all-reduces [B, T, d] twice forward (attention's and the MLP's row-parallel outputs) and twice backward (the
// gradients of their column-parallel inputs), 2 B T d x 4 bytes each way in float32. Also listed: the bytes of the
// replicated parameters whose gradient is summed over the group once per step (not per micro-batch), from the
// model's parameter_splits(): MLA's down-projections and latent norms, a KV projection replicated because tp does
// not divide n_kv_head.
//
//   export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
//   export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
//   mpiexec -n 2 build/ci/tests/bench/tp_comm_bench [--batch 2] [--seq 64]
#include <ATen/ops/randint.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <string>
#include <vector>

#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "launch/runtime.h"
#include "model/gpt.h"
#include "support/counting_communicator.h"
#include "trainer/parallel/tensor_parallel_group.h"

namespace {

using mlagpt::model::AttentionKind;
using mlagpt::model::ModelConfig;

struct Variant {
  std::string name;
  ModelConfig config;
};

std::vector<Variant> variants() {
  ModelConfig base;
  base.vocab_size = 8192;
  base.block_size = 1024;
  base.n_embd = 768;
  base.n_head = 12;
  std::vector<Variant> out;
  const auto add = [&](std::string name, AttentionKind kind, int64_t kv_heads, int64_t q_lora_rank) {
    ModelConfig config = base;
    config.attention = kind;
    config.n_kv_head = kv_heads;
    if (kind == AttentionKind::kMla) {  // DeepSeek-V2's head shapes
      config.q_lora_rank = q_lora_rank;
      config.kv_lora_rank = 512;
      config.qk_nope_head_dim = 128;
      config.qk_rope_head_dim = 64;
      config.v_head_dim = 128;
    }
    out.push_back({std::move(name), config});
  };
  add("mha", AttentionKind::kMha, 0, 0);
  add("gqa, 4 kv heads", AttentionKind::kGqa, 4, 0);
  add("gqa, 6 kv heads", AttentionKind::kGqa, 6, 0);
  add("mqa", AttentionKind::kMqa, 0, 0);
  add("mla", AttentionKind::kMla, 0, 0);
  add("mla, q_lora_rank 384", AttentionKind::kMla, 0, 384);
  return out;
}

struct Bytes {
  int64_t forward = 0;
  int64_t backward = 0;
  int64_t summed_gradients = 0;  // per block, from parameter_splits()
};

Bytes measure(ModelConfig config, int64_t layers, int64_t batch, int64_t seq,
              mlagpt::testing::CountingCommunicator& counting, const mlagpt::model::TensorParallel& group) {
  config.n_layer = layers;
  at::manual_seed(3);
  mlagpt::model::Gpt model(config, group);
  const at::Tensor idx = at::randint(config.vocab_size, {batch, seq}, at::kLong);
  Bytes out;
  counting.reset();
  const at::Tensor loss = model.loss(idx, idx);
  out.forward = counting.bytes();
  counting.reset();
  loss.backward();
  out.backward = counting.bytes();
  const auto params = model.named_parameters();
  for (const auto& [name, split] : model.parameter_splits()) {
    if (split.sum_gradient && name.starts_with("blocks.0.")) {
      out.summed_gradients += params[name].numel() * 4;
    }
  }
  return out;
}

std::string mib(int64_t bytes) {
  return fmt::format("{:.3f}", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

int main(int argc, char** argv) {
  mlagpt::launch::Runtime runtime(&argc, &argv);
  CLI::App app("tp_comm_bench: bytes tensor parallelism all-reduces per block against Megatron's figure (issue 11)");
  int64_t batch = 2;
  int64_t seq = 64;
  app.add_option("--batch", batch, "sequences per batch")->check(CLI::PositiveNumber);
  app.add_option("--seq", seq, "tokens per sequence")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    if (!runtime.info().mpi || runtime.info().world_size < 2) {
      throw mlagpt::ConfigError("tp_comm_bench measures tensor parallelism: run it under mpiexec with 2 or 4 ranks");
    }
    mlagpt::launch::MpiCommunicator comm(MPI_COMM_WORLD);
    mlagpt::testing::CountingCommunicator counting(comm);
    const mlagpt::trainer::TensorParallelGroup group(counting);
    const bool print = comm.rank() == 0;
    if (print) {
      fmt::print("tp {}, batch {} x {} tokens, d 768, 12 heads, float32; MiB per block per micro-batch\n", comm.size(),
                 batch, seq);
      fmt::print("{:<22} {:>9} {:>9} {:>9} {:>7}  {}\n", "variant", "forward", "backward", "megatron", "ratio",
                 "summed gradients per step (MiB)");
    }
    for (const Variant& variant : variants()) {
      const Bytes one = measure(variant.config, 1, batch, seq, counting, group);
      const Bytes two = measure(variant.config, 2, batch, seq, counting, group);
      const int64_t forward = two.forward - one.forward;
      const int64_t backward = two.backward - one.backward;
      const int64_t megatron = 2 * batch * seq * variant.config.n_embd * 4;  // each way
      if (print) {
        fmt::print("{:<22} {:>9} {:>9} {:>9} {:>7.3f}  {}\n", variant.name, mib(forward), mib(backward), mib(megatron),
                   static_cast<double>(forward + backward) / static_cast<double>(2 * megatron),
                   mib(two.summed_gradients));
      }
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "tp_comm_bench: {}\n", e.what());
    runtime.abort(1);
    return 1;
  }
}
