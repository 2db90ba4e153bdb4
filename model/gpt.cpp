#include "model/gpt.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "launch/error.h"
#include "model/config_value.h"
#include "model/vocab_parallel.h"

namespace mlagpt::model {
namespace {

// A torch::nn::Module holding one `weight`, so that embeddings are named wte.weight as in GPT-2 checkpoints.
class WeightHolder final : public torch::nn::Module {
 public:
  explicit WeightHolder(at::Tensor weight) { weight_ = register_parameter("weight", std::move(weight)); }
  at::Tensor weight_;
};

bool ends_with(const std::string& text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Block::Block(const ModelConfig& config, const TensorParallel& group) {
  norm1_ = register_module("norm1", make_norm(config.norm, config.n_embd, config.norm_eps, config.bias));
  attn_ = register_module("attn", make_attention(config, group));
  norm2_ = register_module("norm2", make_norm(config.norm, config.n_embd, config.norm_eps, config.bias));
  mlp_ = register_module("mlp", std::make_shared<Mlp>(config, group));
}

at::Tensor Block::forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) {
  const at::Tensor h = x + attn_->forward(norm1_->forward(x), start_pos, cache, mode);
  return h + mlp_->forward(norm2_->forward(h));
}

Gpt::Gpt(ModelConfig config, const TensorParallel& group) : config_(std::move(config)), group_(group) {
  config_.resolve();
  if (config_.vocab_size == 0) {
    throw ConfigError(
        "model config: vocab_size is not set (0); the trainer sets it from the dataset, code that builds a model "
        "must set it");
  }
  config_.validate_tensor_parallel(group_.size());
  const int64_t d = config_.n_embd;
  const int64_t rows = config_.vocab_size / group_.size();  // this rank's slice of the vocabulary
  wte_ = register_module("wte", std::make_shared<WeightHolder>(at::zeros({rows, d})))->weight_;
  splits_["wte.weight"] = {.dim = 0};
  if (config_.positions == PositionKind::kLearned) {
    wpe_ = register_module("wpe", std::make_shared<WeightHolder>(at::zeros({config_.block_size, d})))->weight_;
  }
  auto blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    blocks_.push_back(std::make_shared<Block>(config_, group_));
    blocks->push_back(blocks_.back());
    const std::string prefix = fmt::format("blocks.{}.", i);
    for (const auto& [name, split] : blocks_.back()->attention().splits()) {
      splits_[prefix + "attn." + name] = split;
    }
    for (const auto& [name, split] : blocks_.back()->mlp().splits()) {
      splits_[prefix + "mlp." + name] = split;
    }
  }
  for (const auto& [path, rank] : parse_low_rank(config_.low_rank)) {
    factorize(path, rank);
  }
  norm_f_ = register_module("norm_f", make_norm(config_.norm, d, config_.norm_eps, config_.bias));
  if (!config_.tie_embeddings) {
    lm_head_ = register_module("lm_head", std::make_shared<WeightHolder>(at::zeros({rows, d})))->weight_;
    splits_["lm_head.weight"] = {.dim = 0};
  }
  for (const auto& item : named_parameters()) {
    splits_.try_emplace(item.key());  // the rest: replicated, the whole gradient on every rank
  }
  init_weights();
}

void Gpt::init_weights() {
  const c10::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& p = item.value();
    if (ends_with(name, "bias")) {
      p.zero_();
    } else if (p.dim() == 1) {
      p.fill_(1.0);  // norm weights
    } else {
      const bool residual = ends_with(name, "o_proj.weight") || ends_with(name, "mlp.proj.weight") ||
                            ends_with(name, "o_proj.weight_b") || ends_with(name, "mlp.proj.weight_b");
      double std = residual ? residual_std : 0.02;
      if (ends_with(name, ".weight_a")) {
        std = 1.0 / std::sqrt(static_cast<double>(p.size(0)));  // W = B A: r terms of variance 1 / r times std^2
      }
      const ParameterSplit& split = splits_.at(name);
      if (!split.split() || group_.size() == 1) {
        p.normal_(0.0, std);
        continue;
      }
      // The whole tensor, drawn as on one device (every rank draws the same numbers), of which this rank keeps
      // its chunk: a tensor-parallel run starts from the weights of a single process.
      std::vector<int64_t> full = p.sizes().vec();
      full[static_cast<size_t>(split.dim)] *= group_.size();
      const at::Tensor whole = at::empty(full, p.options()).normal_(0.0, std);
      const int64_t chunk = p.size(split.dim);
      p.copy_(whole.narrow(split.dim, group_.rank() * chunk, chunk));
    }
  }
}

Gpt::ProjectionSlot Gpt::slot(std::string_view path) const {
  // blocks.<i>.<attn|mlp>.<name>
  const auto fail = [&] {
    return Error(
        fmt::format("the model has no projection '{}' (projections are blocks.<0..{}>.attn.<name> and "
                    "blocks.<i>.mlp.<name>; attention has {}, the mlp {})",
                    path, config_.n_layer - 1, fmt::join(blocks_.front()->attention().projection_names(), ", "),
                    fmt::join(blocks_.front()->mlp().projection_names(), ", ")));
  };
  constexpr std::string_view kBlocks = "blocks.";
  if (path.substr(0, kBlocks.size()) != kBlocks) {
    throw fail();
  }
  const size_t dot = path.find('.', kBlocks.size());
  const std::optional<int64_t> index =
      dot == std::string_view::npos ? std::nullopt : parse_integer(path.substr(kBlocks.size(), dot - kBlocks.size()));
  if (!index || *index < 0 || *index >= config_.n_layer) {
    throw fail();
  }
  const std::string_view rest = path.substr(dot + 1);
  ProjectionSlot found{.block = blocks_[static_cast<size_t>(*index)].get(), .attention = false, .name = {}};
  if (rest.substr(0, 5) == "attn.") {
    found.attention = true;
    found.name = std::string(rest.substr(5));
  } else if (rest.substr(0, 4) == "mlp.") {
    found.name = std::string(rest.substr(4));
  } else {
    throw fail();
  }
  const std::vector<std::string> names =
      found.attention ? found.block->attention().projection_names() : found.block->mlp().projection_names();
  if (std::find(names.begin(), names.end(), found.name) == names.end()) {
    throw fail();
  }
  return found;
}

std::vector<std::string> Gpt::projection_paths() const {
  std::vector<std::string> paths;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    for (const std::string& name : blocks_[i]->attention().projection_names()) {
      paths.push_back(fmt::format("blocks.{}.attn.{}", i, name));
    }
    for (const std::string& name : blocks_[i]->mlp().projection_names()) {
      paths.push_back(fmt::format("blocks.{}.mlp.{}", i, name));
    }
  }
  return paths;
}

std::shared_ptr<Projection> Gpt::projection(std::string_view path) const {
  const ProjectionSlot found = slot(path);
  return found.attention ? found.block->attention().projection(found.name) : found.block->mlp().projection(found.name);
}

TpLayout Gpt::projection_layout(std::string_view path) const {
  const ProjectionSlot found = slot(path);
  return found.attention ? found.block->attention().layout(found.name) : found.block->mlp().layout(found.name);
}

std::array<int64_t, 2> Gpt::full_shape(std::string_view path) const {
  const std::shared_ptr<Projection> p = projection(path);
  const TpLayout layout = projection_layout(path);
  const int64_t tp = group_.size();
  return {p->out_features() * (layout == TpLayout::kColumn ? tp : 1),
          p->in_features() * (layout == TpLayout::kRow ? tp : 1)};
}

std::shared_ptr<LowRankLinear> Gpt::factorize(const std::string& path, int64_t rank) {
  const ProjectionSlot found = slot(path);
  const std::shared_ptr<Projection> current = projection(path);
  const auto [out, in] = full_shape(path);
  if (rank < 1 || rank > std::min(out, in)) {
    throw ConfigError(fmt::format("model config: low_rank {}={}: the rank must be in [1, {}] for its [{} x {}] weight",
                                  path, rank, std::min(out, in), out, in));
  }
  const at::Tensor old_bias = current->bias();
  auto low_rank =
      std::make_shared<LowRankLinear>(current->in_features(), current->out_features(), rank, old_bias.defined());
  low_rank->to(current->effective_weight().device(), current->effective_weight().scalar_type());
  if (old_bias.defined()) {
    const c10::NoGradGuard no_grad;
    low_rank->bias().copy_(old_bias);
  }
  const std::string prefix = path.substr(0, path.size() - found.name.size());  // "blocks.0.attn."
  const std::map<std::string, ParameterSplit, std::less<>>* layer_splits = nullptr;
  if (found.attention) {
    found.block->attention().replace_projection(found.name, low_rank);
    layer_splits = &found.block->attention().splits();
  } else {
    found.block->mlp().replace_projection(found.name, low_rank);
    layer_splits = &found.block->mlp().splits();
  }
  for (auto it = splits_.lower_bound(path + "."); it != splits_.end() && it->first.rfind(path + ".", 0) == 0;) {
    it = splits_.erase(it);
  }
  for (const auto& [name, split] : *layer_splits) {
    if (name.rfind(found.name + ".", 0) == 0) {
      splits_[prefix + name] = split;
    }
  }
  LowRankMap ranks = parse_low_rank(config_.low_rank);
  ranks[path] = rank;
  config_.low_rank = format_low_rank(ranks);
  return low_rank;
}

at::Tensor Gpt::forward(const at::Tensor& idx, KvCache* cache) {
  const int64_t T = idx.size(1);
  const int64_t start = cache != nullptr ? cache->length() : 0;
  if (start + T > config_.block_size) {
    throw Error(
        fmt::format("sequence of {} tokens (after {} cached) exceeds block_size {}", T, start, config_.block_size));
  }
  if (cache != nullptr && start + T > cache->max_length()) {
    throw Error(fmt::format("KV cache holds {} positions; {} + {} requested", cache->max_length(), start, T));
  }
  at::Tensor x = vocab_parallel_embedding(wte_, idx, group_);  // [B, T, d]
  if (wpe_.defined()) {
    x = x + at::embedding(wpe_, at::arange(start, start + T, idx.options()));
  }
  x = at::dropout(x, is_training() ? config_.dropout : 0.0, is_training());
  const MlaDecodeMode mode = cache != nullptr ? cache->mode() : MlaDecodeMode::kNaive;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    x = blocks_[i]->forward(x, start, cache != nullptr ? &cache->layer(i) : nullptr, mode);
  }
  if (cache != nullptr) {
    cache->advance(T);
  }
  x = norm_f_->forward(x);
  // The head is column-parallel over the vocabulary: [B, T, V / tp].
  return at::linear(copy_to_tensor_parallel_region(x, group_), lm_head_.defined() ? lm_head_ : wte_);
}

KvCache Gpt::make_cache(int64_t batch, int64_t max_len, const at::TensorOptions& options, MlaDecodeMode mode) const {
  if (max_len > config_.block_size) {
    throw Error(fmt::format("KV cache of {} positions exceeds block_size {}", max_len, config_.block_size));
  }
  std::vector<std::unique_ptr<LayerCache>> layers;
  for (const auto& block : blocks_) {
    layers.push_back(block->attention().make_cache(batch, max_len, options));
  }
  return KvCache(std::move(layers), max_len, mode);
}

at::Tensor Gpt::loss(const at::Tensor& idx, const at::Tensor& targets) {
  if (group_.size() == 1) {
    return model::cross_entropy_loss(forward(idx), targets);
  }
  return vocab_parallel_cross_entropy(forward(idx), targets, group_);
}

at::Tensor cross_entropy_loss(const at::Tensor& logits, const at::Tensor& targets) {
  const int64_t V = logits.size(-1);
  // Reduced-precision logits are upcast: the log-sum-exp over a large vocabulary needs float32.
  const at::Tensor wide = logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat);
  return at::cross_entropy_loss(wide.reshape({-1, V}), targets.reshape({-1}), {}, at::Reduction::Mean, kIgnoreIndex);
}

}  // namespace mlagpt::model
