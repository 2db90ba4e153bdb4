#include "trainer/compression/compression.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <c10/util/hash.h>
#include <fnmatch.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "launch/error.h"
#include "linalg/rsvd.h"
#include "linalg/sharded_rsvd.h"
#include "linalg/tall_qr.h"
#include "model/accounting.h"
#include "model/projection.h"

namespace mlagpt::trainer {
namespace {

using model::LowRankLinear;
using model::TpLayout;

// A projection's new factors, this rank's shards of them, and how well they approximate it.
struct Factors {
  at::Tensor b;  // [out_local, k]
  at::Tensor a;  // [k, in_local]
  double kept_energy = 0;
  double relative_error = 0;
};

bool split(TpLayout layout, const launch::Communicator& tp) {
  return layout != TpLayout::kReplicated && tp.size() > 1;
}

// The sum over the ranks that hold parts of the weight (a float64 scalar).
double sum_over_shards(const at::Tensor& local_sum, TpLayout layout, launch::Communicator& tp) {
  at::Tensor sum = local_sum.to(at::kDouble).reshape({1}).contiguous();
  if (split(layout, tp)) {
    tp.all_reduce(sum);
  }
  return sum.item<double>();
}

// The randomized SVD of a dense weight, sharded as it lies.
linalg::RsvdResult weight_svd(const at::Tensor& w, TpLayout layout, launch::Communicator& tp,
                              const linalg::RsvdOptions& options) {
  if (!split(layout, tp)) {
    return linalg::rsvd(w, options);
  }
  return linalg::sharded_rsvd(w, layout == TpLayout::kColumn ? linalg::Split::kRows : linalg::Split::kColumns, tp,
                              options);
}

Factors factor_dense(const at::Tensor& w, int64_t out, int64_t in, TpLayout layout, launch::Communicator& tp,
                     const CompressionSettings& settings, uint64_t seed) {
  const double total = sum_over_shards(w.to(at::kDouble).square().sum(), layout, tp);
  if (!(total > 0) || !std::isfinite(total)) {
    throw Error(
        fmt::format("compression: the weight's squared norm is {}; a zero or non-finite weight has no "
                    "low-rank approximation",
                    total));
  }
  const int64_t full_rank = std::min(out, in);
  linalg::RsvdOptions options{
      .k = 0, .oversample = settings.oversample, .power_iters = settings.power_iters, .seed = seed};
  linalg::RsvdResult svd;
  int64_t k = 0;
  if (settings.rule.energy > 0) {
    // Widen until the leading values hold the share (or the SVD is exact): every rank sees the same s.
    options.k = std::min(full_rank, std::max<int64_t>(8, (full_rank + 7) / 8));
    while (true) {
      svd = weight_svd(w, layout, tp, options);
      k = choose_rank(settings.rule, out, in, svd.s, total);
      if (k > 0) {
        break;
      }
      if (options.k == full_rank) {  // the exact spectrum, short of the share only by round-off
        k = full_rank;
        break;
      }
      options.k = std::min(full_rank, 2 * options.k);
    }
  } else {
    options.k = choose_rank(settings.rule, out, in, at::Tensor(), total);
    svd = weight_svd(w, layout, tp, options);
    k = options.k;
  }
  const at::Tensor root = svd.s.narrow(0, 0, k).sqrt();
  Factors f;
  f.b = (svd.u.narrow(1, 0, k) * root).to(w.scalar_type()).contiguous();
  f.a = (svd.v.narrow(1, 0, k) * root).t().to(w.scalar_type()).contiguous();
  f.kept_energy = svd.s.narrow(0, 0, k).to(at::kDouble).square().sum().item<double>() / total;
  const at::Tensor residual = w.to(at::kDouble) - at::mm(f.b.to(at::kDouble), f.a.to(at::kDouble));
  f.relative_error = std::sqrt(sum_over_shards(residual.square().sum(), layout, tp) / total);
  return f;
}

// Re-factorizes W = B A from its factors: B = Q R (or A^T = Q R for a row-parallel one, whose A is split), and
// the SVD of the small product R A (or B R^T) is W's. Computed in float64.
Factors refactor(LowRankLinear& current, int64_t out, int64_t in, TpLayout layout, launch::Communicator& tp,
                 const CompressionSettings& settings) {
  const at::Tensor b = current.weight_b().detach().to(at::kDouble);
  const at::Tensor a = current.weight_a().detach().to(at::kDouble);
  const int64_t r = current.rank();
  const bool rows_split = layout == TpLayout::kRow && split(layout, tp);  // A's columns are the split ones
  // The factor whose rows are split, or B when nothing is split: its QR is sharded like it.
  const at::Tensor tall = rows_split ? a.t() : b;
  linalg::RowSplit row_split;
  if (split(layout, tp)) {
    row_split = {.comm = &tp, .rows_per_rank = std::vector<int64_t>(static_cast<size_t>(tp.size()), tall.size(0))};
  }
  const linalg::QrFactors qr = linalg::tall_qr(tall, linalg::QrMethod::kCholeskyQr2, row_split);
  // W = Q (R A) when B was factored, W = (B R^T) Q^T when A^T was.
  const at::Tensor small = rows_split ? at::mm(b, qr.r.t()) : at::mm(qr.r, a);
  const auto [u, s, vh] = at::linalg_svd(small, /*full_matrices=*/false);
  const double total = s.square().sum().item<double>();
  if (!(total > 0) || !std::isfinite(total)) {
    throw Error(fmt::format("compression: the low-rank weight's squared norm is {}", total));
  }
  int64_t k = choose_rank(settings.rule, out, in, s, total);
  k = std::clamp<int64_t>(k == 0 ? r : k, 1, r);
  const at::Tensor root = s.narrow(0, 0, k).sqrt();
  Factors f;
  if (rows_split) {
    f.b = u.narrow(1, 0, k) * root;                           // [out, k]
    f.a = (at::mm(qr.q, vh.t().narrow(1, 0, k)) * root).t();  // [k, in_local]
  } else {
    f.b = at::mm(qr.q, u.narrow(1, 0, k)) * root;  // [out_local, k]
    f.a = vh.narrow(0, 0, k) * root.unsqueeze(1);  // [k, in]
  }
  f.b = f.b.to(at::kFloat).to(current.weight_b().options()).contiguous();
  f.a = f.a.to(at::kFloat).to(current.weight_a().options()).contiguous();
  const double kept = s.narrow(0, 0, k).square().sum().item<double>();
  f.kept_energy = kept / total;
  f.relative_error = std::sqrt(std::max(0.0, total - kept) / total);
  return f;
}

int64_t parameter_count(int64_t out, int64_t in, int64_t rank, bool bias) {
  return (rank == 0 ? out * in : rank * (out + in)) + (bias ? out : 0);
}

}  // namespace

std::string_view to_string(CompressMode mode) {
  return mode == CompressMode::kFactorize ? "factorize" : "project";
}

CompressMode parse_compress_mode(std::string_view field, std::string_view text) {
  if (text == "factorize") {
    return CompressMode::kFactorize;
  }
  if (text == "project") {
    return CompressMode::kProject;
  }
  throw ConfigError(fmt::format("{}: '{}' is not one of factorize, project", field, text));
}

std::vector<std::string> split_targets(std::string_view text) {
  std::vector<std::string> globs;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    std::string_view glob = text.substr(start, end - start);
    while (!glob.empty() && glob.front() == ' ') {
      glob.remove_prefix(1);
    }
    while (!glob.empty() && glob.back() == ' ') {
      glob.remove_suffix(1);
    }
    if (!glob.empty()) {
      globs.emplace_back(glob);
    }
    start = end + 1;
  }
  return globs;
}

std::vector<std::string> select_targets(const model::Gpt& model, const std::vector<std::string>& globs,
                                        std::string_view field) {
  const std::vector<std::string> paths = model.projection_paths();
  if (globs.empty()) {
    throw ConfigError(fmt::format("{} is empty: name the projections to compress (e.g. blocks.*.mlp.*)", field));
  }
  std::vector<bool> chosen(paths.size(), false);
  for (const std::string& glob : globs) {
    bool any = false;
    for (size_t i = 0; i < paths.size(); ++i) {
      if (fnmatch(glob.c_str(), paths[i].c_str(), 0) == 0) {
        chosen[i] = true;
        any = true;
      }
    }
    if (!any) {
      throw ConfigError(fmt::format("{}: '{}' matches no projection of this model (its projections: {})", field, glob,
                                    fmt::join(paths, ", ")));
    }
  }
  std::vector<std::string> selected;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (chosen[i]) {
      selected.push_back(paths[i]);
    }
  }
  return selected;
}

int64_t choose_rank(const RankRule& rule, int64_t out, int64_t in, const at::Tensor& s, double total_energy) {
  const int64_t full_rank = std::min(out, in);
  if (rule.rank > 0) {
    return std::min(rule.rank, full_rank);
  }
  if (rule.param_ratio > 0) {
    const auto k = static_cast<int64_t>(std::floor(rule.param_ratio * static_cast<double>(out) *
                                                   static_cast<double>(in) / static_cast<double>(out + in)));
    return std::clamp<int64_t>(k, 1, full_rank);
  }
  const at::Tensor cumulative = s.to(at::kDouble).square().cumsum(0).cpu();
  const auto* values = cumulative.data_ptr<double>();
  for (int64_t i = 0; i < cumulative.numel(); ++i) {
    // A relative tolerance, so that energy = 1 keeps all of an exact spectrum despite round-off in its sum.
    if (values[i] >= rule.energy * total_energy * (1 - 1e-12)) {
      return i + 1;
    }
  }
  return 0;
}

int64_t full_parameter_count(const model::Gpt& model) {
  const int64_t tp = model.tensor_parallel().size();
  int64_t count = 0;
  for (const auto& item : model.named_parameters()) {
    const auto split = model.parameter_splits().find(item.key());
    const bool is_split = split != model.parameter_splits().end() && split->second.split();
    count += item.value().numel() * (is_split ? tp : 1);
  }
  return count;
}

CompressionReport compress_model(model::Gpt& model, const CompressionSettings& settings, launch::Communicator& tp,
                                 launch::Communicator& dp) {
  const auto start = std::chrono::steady_clock::now();
  CompressionReport report;
  report.model_parameters_before = full_parameter_count(model);
  const std::vector<std::string> targets = select_targets(model, settings.targets);
  const c10::NoGradGuard no_grad;

  // This rank's targets, factored with its tensor-parallel group.
  std::vector<Factors> factors(targets.size());
  std::string failure;
  report.layers.resize(targets.size());
  for (size_t j = 0; j < targets.size(); ++j) {
    LayerCompression& layer = report.layers[j];
    layer.path = targets[j];
    layer.owner = static_cast<int>(j % static_cast<size_t>(dp.size()));
    const std::shared_ptr<model::Projection> projection = model.projection(targets[j]);
    auto* low_rank = dynamic_cast<LowRankLinear*>(projection.get());
    const auto [out, in] = model.full_shape(targets[j]);
    layer.rank_before = low_rank != nullptr ? low_rank->rank() : 0;
    if (low_rank != nullptr && settings.mode == CompressMode::kProject) {
      throw Error(
          fmt::format("compress.mode = project: {} is low rank already (rank {}); project keeps dense "
                      "projections dense, factorize re-factorizes low-rank ones",
                      targets[j], low_rank->rank()));
    }
    layer.parameters_before = parameter_count(out, in, layer.rank_before, projection->bias().defined());
    if (layer.owner != dp.rank()) {
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const TpLayout layout = model.projection_layout(targets[j]);
    const uint64_t seed = c10::twang_mix64(settings.seed ^ (0x9E3779B97F4A7C15ULL * (j + 1)));
    try {
      factors[j] = low_rank != nullptr
                       ? refactor(*low_rank, out, in, layout, tp, settings)
                       : factor_dense(projection->effective_weight().detach(), out, in, layout, tp, settings, seed);
    } catch (const Error& e) {
      failure = fmt::format("compression of {}: {}", targets[j], e.what());
      break;
    }
    layer.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  // A factorization that failed on one data-parallel rank (a non-finite weight) fails the pass on every rank, before
  // any broadcast that rank would never join. (Within a tensor-parallel group every rank sees the same failure.)
  if (dp.size() > 1) {
    at::Tensor failed = at::full({1}, failure.empty() ? 0.0 : static_cast<double>(dp.rank() + 1),
                                 model.projection(targets.front())->effective_weight().options().dtype(at::kDouble));
    dp.all_reduce(failed, launch::ReduceOp::kMax);
    const auto first = static_cast<int>(failed.item<double>());
    if (first > 0 && failure.empty()) {
      failure =
          fmt::format("the compression pass failed on data-parallel rank {} (its log names the projection)", first - 1);
    }
  }
  if (!failure.empty()) {
    throw Error(failure);
  }

  // Every target's factors from the rank that computed them, in target order on every rank.
  for (size_t j = 0; j < targets.size(); ++j) {
    LayerCompression& layer = report.layers[j];
    const std::shared_ptr<model::Projection> projection = model.projection(targets[j]);
    const at::TensorOptions options = projection->effective_weight().options();
    Factors& f = factors[j];
    if (dp.size() > 1) {
      at::Tensor meta = at::zeros({4}, options.dtype(at::kDouble));
      if (layer.owner == dp.rank()) {
        meta = at::tensor({static_cast<double>(f.b.size(1)), f.kept_energy, f.relative_error, layer.seconds},
                          options.dtype(at::kDouble));
      }
      dp.broadcast(meta, layer.owner);
      const at::Tensor values = meta.cpu();
      const auto k = static_cast<int64_t>(values[0].item<double>());
      if (layer.owner != dp.rank()) {
        f.b = at::empty({projection->out_features(), k}, options.dtype(at::kFloat));
        f.a = at::empty({k, projection->in_features()}, options.dtype(at::kFloat));
        f.kept_energy = values[1].item<double>();
        f.relative_error = values[2].item<double>();
        layer.seconds = values[3].item<double>();
      }
      dp.broadcast(f.b, layer.owner);
      dp.broadcast(f.a, layer.owner);
    }
    layer.rank = f.b.size(1);
    layer.kept_energy = f.kept_energy;
    layer.relative_error = f.relative_error;
    const auto [out, in] = model.full_shape(targets[j]);
    const bool bias = projection->bias().defined();
    if (settings.mode == CompressMode::kFactorize && layer.rank_before == 0 &&
        parameter_count(out, in, layer.rank, bias) >= layer.parameters_before) {
      // Factors of this rank would hold at least as many weights as the dense layer: it stays as it is.
      layer.rank = 0;
      layer.kept_energy = 1;
      layer.relative_error = 0;
      layer.parameters_after = layer.parameters_before;
      continue;
    }
    if (settings.mode == CompressMode::kFactorize) {
      const std::shared_ptr<LowRankLinear> replacement = model.factorize(targets[j], layer.rank);
      replacement->weight_b().copy_(f.b);
      replacement->weight_a().copy_(f.a);
      layer.parameters_after = parameter_count(out, in, layer.rank, bias);
    } else {
      projection->effective_weight().copy_(at::mm(f.b, f.a));  // a DenseLinear's weight itself
      layer.parameters_after = layer.parameters_before;
    }
  }
  report.model_parameters_after = full_parameter_count(model);
  report.kv_cache_values_per_token = model::kv_cache_values_per_token(model.config());
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace mlagpt::trainer
