// Decoding throughput and KV-cache size of the tiny attention variants (launch/configs/tiny_*.toml with block_size
// raised to the longest context): MHA, GQA, MQA, and MLA decoding naively (K and V expanded from the cached latent
// at every step) and absorbed (attention over the latent, docs/mla.md). For each context S and batch B the cache
// is filled with S - tokens - 1 positions of random keys (decoding speed does not depend on what they hold, and a
// prefill of 16 x 8192 tokens would dominate the run), one warm-up token is decoded, then `tokens` tokens are timed
// one at a time, the last one seeing S positions. Also the prefill of one --prompt-token prompt through an empty
// cache in each mode (MLA prefills naively in both: absorbed attention only pays for short query chunks).
// Prints a table, the absorbed / naive ratios, and one JSON line per measurement ({"bench": "decode", ...}).
// --mla-config picks another MLA config for the MLA variants (gpt2_small_mla: its prefill is where absorbed
// attention costs most; its vocabulary is set to 128 here, like the others'), --only a subset of the variants.
//
//   decode_bench [--contexts 512,2048,8192] [--batches 1,16] [--tokens 16] [--prompt 512] [--threads 2]
//                [--mla-config tiny_mla] [--only mha,gqa,mqa,mla_naive,mla_absorbed] [--device cpu|cuda]
//                [--dtype float32|bfloat16]
#include <ATen/Parallel.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "launch/error.h"
#include "launch/host_memory.h"
#include "model/gpt.h"
#include "trainer/train_config.h"

namespace {

using mlagpt::model::KvCache;
using mlagpt::model::MlaDecodeMode;

struct Variant {
  std::string name;
  std::string config;  // launch/configs/<config>.toml
  MlaDecodeMode mode;
};

// Waits for the device by reading one value of the last output (a no-op wait on a CPU).
void synchronize(const at::Tensor& output) {
  (void)output.flatten()[0].item<float>();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Writes random keys at positions [0, length) of every layer, as a prefill would, and advances the cache.
void fill(KvCache& cache, const mlagpt::model::ModelConfig& config, size_t layers, int64_t batch, int64_t length,
          const at::TensorOptions& options) {
  for (size_t i = 0; i < layers; ++i) {
    mlagpt::model::LayerCache& layer = cache.layer(i);
    if (auto* latent = dynamic_cast<mlagpt::model::LatentLayerCache*>(&layer)) {
      latent->write(0, at::randn({batch, length, config.kv_lora_rank}, options),
                    at::randn({batch, length, config.qk_rope_head_dim}, options));
    } else {
      auto& standard = dynamic_cast<mlagpt::model::StandardLayerCache&>(layer);
      const int64_t Dh = config.head_dim();
      standard.write(0, at::randn({batch, length, config.n_kv_head, Dh}, options),
                     at::randn({batch, length, config.n_kv_head, Dh}, options));
    }
  }
  cache.advance(length);
}

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> values;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    values.push_back(std::stoll(text.substr(at, comma - at)));
    at = comma + 1;
  }
  return values;
}

int run(const std::string& root, const std::string& mla_config, const std::string& only,
        const std::vector<int64_t>& contexts, const std::vector<int64_t>& batches, int64_t tokens, int64_t prompt,
        int threads, const std::string& device_name, const std::string& dtype) {
  at::set_num_threads(threads);
  const c10::Device device(device_name);
  const at::TensorOptions options =
      at::TensorOptions().device(device).dtype(dtype == "bfloat16" ? at::kBFloat16 : at::kFloat);
  const int64_t longest = std::max(*std::max_element(contexts.begin(), contexts.end()), prompt);
  const std::vector<Variant> variants = {{"mha", "tiny_mha", MlaDecodeMode::kNaive},
                                         {"gqa", "tiny_gqa", MlaDecodeMode::kNaive},
                                         {"mqa", "tiny_mqa", MlaDecodeMode::kNaive},
                                         {"mla_naive", mla_config, MlaDecodeMode::kNaive},
                                         {"mla_absorbed", mla_config, MlaDecodeMode::kAbsorbed}};
  const c10::InferenceMode inference;
  std::map<std::string, double> rate;  // "variant S B" -> tokens/s
  std::printf("%-13s %7s %5s %14s %14s %12s\n", "variant", "context", "batch", "tokens/s", "cache bytes/tok",
              "prefill s");
  for (const Variant& variant : variants) {
    if (!only.empty() && ("," + only + ",").find("," + variant.name + ",") == std::string::npos) {
      continue;
    }
    const auto config_file = fmt::format("{}/launch/configs/{}.toml", root, variant.config);
    const mlagpt::trainer::TrainConfig train = mlagpt::trainer::read_train_config(
        config_file, {fmt::format("--model.block_size={}", longest), "--model.vocab_size=128", "--model.dropout=0",
                      "--data.seq_len=0"});
    mlagpt::model::Gpt model(train.model);
    model.to(device, options.dtype().toScalarType());
    model.eval();
    const size_t layers = static_cast<size_t>(train.model.n_layer);

    // Prefill of one prompt into an empty cache.
    double prefill_seconds = 0;
    {
      KvCache cache = model.make_cache(1, prompt, options, variant.mode);
      const at::Tensor idx = at::randint(128, {1, prompt}, at::TensorOptions().dtype(at::kLong).device(device));
      synchronize(model.forward(idx, &cache));  // warm-up
      cache.clear();
      const auto start = std::chrono::steady_clock::now();
      synchronize(model.forward(idx, &cache));
      prefill_seconds = seconds_since(start);
    }
    for (const int64_t S : contexts) {
      for (const int64_t B : batches) {
        if (S < tokens + 2) {
          throw mlagpt::Error(fmt::format("--contexts: {} is shorter than --tokens {} + 2", S, tokens));
        }
        KvCache cache = model.make_cache(B, S, options, variant.mode);
        fill(cache, train.model, layers, B, S - tokens - 1, options);
        const auto next = [&] { return at::randint(128, {B, 1}, at::TensorOptions().dtype(at::kLong).device(device)); };
        synchronize(model.forward(next(), &cache));  // warm-up
        const auto start = std::chrono::steady_clock::now();
        at::Tensor logits;
        for (int64_t t = 0; t < tokens; ++t) {
          logits = model.forward(next(), &cache);
        }
        synchronize(logits);
        const double seconds = seconds_since(start);
        const double tokens_per_second = static_cast<double>(B * tokens) / seconds;
        const int64_t bytes_per_token = cache.bytes() / (B * S);
        rate[fmt::format("{} {} {}", variant.name, S, B)] = tokens_per_second;
        std::printf("%-13s %7lld %5lld %14.1f %14lld %12.4f\n", variant.name.c_str(), static_cast<long long>(S),
                    static_cast<long long>(B), tokens_per_second, static_cast<long long>(bytes_per_token),
                    prefill_seconds);
        const nlohmann::json line = {{"bench", "decode"},
                                     {"variant", variant.name},
                                     {"context", S},
                                     {"batch", B},
                                     {"tokens_per_second", tokens_per_second},
                                     {"kv_cache_bytes", cache.bytes()},
                                     {"kv_cache_bytes_per_token", bytes_per_token},
                                     {"prefill_tokens", prompt},
                                     {"prefill_seconds", prefill_seconds},
                                     {"threads", threads},
                                     {"device", device_name},
                                     {"dtype", dtype}};
        std::printf("%s\n", line.dump().c_str());
      }
    }
  }
  for (const int64_t S : contexts) {
    for (const int64_t B : batches) {
      if (rate.count(fmt::format("mla_absorbed {} {}", S, B)) == 0 ||
          rate.count(fmt::format("mla_naive {} {}", S, B)) == 0) {
        continue;
      }
      const double ratio = rate[fmt::format("mla_absorbed {} {}", S, B)] / rate[fmt::format("mla_naive {} {}", S, B)];
      std::printf("absorbed / naive at context %lld, batch %lld: %.3f\n", static_cast<long long>(S),
                  static_cast<long long>(B), ratio);
      const nlohmann::json line = {
          {"bench", "decode_ratio"}, {"context", S}, {"batch", B}, {"absorbed_vs_naive", ratio}};
      std::printf("%s\n", line.dump().c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"decoding tokens/s and KV-cache bytes of MHA, GQA, MQA, MLA naive and MLA absorbed"};
  std::string root = MLAGPT_SOURCE_DIR;
  std::string contexts = "512,2048,8192";
  std::string batches = "1,16";
  std::string mla_config = "tiny_mla";
  std::string only;
  int64_t tokens = 16;
  int64_t prompt = 512;
  int threads = 2;
  std::string device = "cpu";
  std::string dtype = "float32";
  app.add_option("--root", root, "the repository (for launch/configs)");
  app.add_option("--contexts", contexts, "comma-separated context lengths");
  app.add_option("--mla-config", mla_config, "the launch/configs file of the MLA variants (e.g. gpt2_small_mla)");
  app.add_option("--only", only, "comma-separated variants to run (mha, gqa, mqa, mla_naive, mla_absorbed)");
  app.add_option("--batches", batches, "comma-separated batch sizes");
  app.add_option("--tokens", tokens, "tokens timed per measurement")->check(CLI::PositiveNumber);
  app.add_option("--prompt", prompt, "prompt length of the prefill measurement")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "intra-op threads")->check(CLI::PositiveNumber);
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", dtype, "float32 or bfloat16")->check(CLI::IsMember({"float32", "bfloat16"}));
  CLI11_PARSE(app, argc, argv);
  mlagpt::launch::keep_freed_host_memory();  // as mlagpt does
  try {
    return run(root, mla_config, only, parse_list(contexts), parse_list(batches), tokens, prompt, threads, device,
               dtype);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "decode_bench: %s\n", error.what());
    return 1;
  }
}
