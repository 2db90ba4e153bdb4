#include "trainer/parallel/flat_adamw.h"

#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "launch/error.h"

namespace mlagpt::trainer {

FlatAdamW::FlatAdamW(std::vector<NamedParameter> parameters, const AdamWSettings& settings, const FlatOptions& options,
                     launch::Communicator& comm)
    : parameters_(std::move(parameters)), settings_(settings), options_(options), comm_(comm) {
  std::vector<ParameterInfo> infos;
  for (const NamedParameter& p : parameters_) {
    if (!p.tensor.defined() || p.tensor.scalar_type() != at::kFloat) {
      throw Error(
          fmt::format("FlatAdamW: parameter {} is {}, not float32 (mixed precision comes from autocast; the "
                      "parameters are the float32 master weights)",
                      p.name, p.tensor.defined() ? c10::toString(p.tensor.scalar_type()) : "undefined"));
    }
    if (p.tensor.device() != parameters_.front().tensor.device()) {
      throw Error(fmt::format("FlatAdamW: parameter {} is on {}, {} on {}", p.name, p.tensor.device().str(),
                              parameters_.front().name, parameters_.front().tensor.device().str()));
    }
    infos.push_back({p.name, p.tensor.sizes().vec(), p.decay});
  }
  layout_ = plan_flat_layout(infos, options_.bucket_bytes, comm_.size());
  const at::TensorOptions float32 = at::TensorOptions().dtype(at::kFloat).device(parameters_.front().tensor.device());
  const c10::NoGradGuard no_grad;
  for (const FlatGroup& group : layout_.groups) {
    params_.push_back(at::zeros({group.numel}, float32));
    grads_.push_back(at::zeros({group.numel}, float32));
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const FlatParam& flat = layout_.params[i];
    at::Tensor& tensor = parameters_[i].tensor;
    const auto g = static_cast<size_t>(flat.group);
    at::Tensor value = params_[g].narrow(0, flat.offset, flat.numel);
    value.copy_(tensor.detach().reshape({-1}));
    tensor.set_data(value.view(tensor.sizes()));
    tensor.mutable_grad() = grads_[g].narrow(0, flat.offset, flat.numel).view(tensor.sizes());
  }
  const int64_t shard = comm_.rank();
  for (size_t g = 0; g < layout_.groups.size(); ++g) {
    GroupState state;
    if (!options_.zero) {
      state.params = {params_[g]};
      state.grads = {grads_[g]};
      state.exp_avg = {at::zeros_like(params_[g])};
      state.exp_avg_sq = {at::zeros_like(params_[g])};
    }
    state_.push_back(std::move(state));
  }
  if (options_.zero) {
    for (size_t b = 0; b < layout_.buckets.size(); ++b) {
      const int bucket = static_cast<int>(b);
      const auto g = static_cast<size_t>(layout_.buckets[b].group);
      const int64_t n = layout_.shard_numel(bucket);
      shard_grads_.push_back(at::zeros({n}, float32));
      state_[g].params.push_back(params_[g].narrow(0, layout_.shard_offset(bucket, shard), n));
      state_[g].grads.push_back(shard_grads_.back());
      state_[g].exp_avg.push_back(at::zeros({n}, float32));
      state_[g].exp_avg_sq.push_back(at::zeros({n}, float32));
    }
  }
  steps_ = at::zeros({}, float32);
  norm_grads_ = norm_gradients();
}

std::vector<at::Tensor> FlatAdamW::norm_gradients() const {
  std::vector<at::Tensor> out;
  if (std::all_of(parameters_.begin(), parameters_.end(), [](const NamedParameter& p) { return p.in_grad_norm; })) {
    for (const GroupState& state : state_) {
      out.insert(out.end(), state.grads.begin(), state.grads.end());
    }
    return out;
  }
  // Views of `window` (whose element 0 is at `window_begin` of its group's buffer) over runs of counted ranges;
  // `ranges` are in buffer order, and the padding between two counted parameters (zero) may lie in a run.
  const auto add_runs = [&](const at::Tensor& window, int64_t window_begin, const std::vector<ParamRange>& ranges) {
    int64_t run_begin = -1;
    int64_t run_end = -1;
    const auto flush = [&] {
      if (run_begin >= 0) {
        out.push_back(window.narrow(0, run_begin - window_begin, run_end - run_begin));
      }
      run_begin = -1;
    };
    for (const ParamRange& range : ranges) {
      const FlatParam& p = layout_.params[static_cast<size_t>(range.param)];
      if (!parameters_[static_cast<size_t>(range.param)].in_grad_norm) {
        flush();
        continue;
      }
      if (run_begin < 0) {
        run_begin = p.offset + range.begin;
      }
      run_end = p.offset + range.end;
    }
    flush();
  };
  if (options_.zero) {
    const int64_t shard = comm_.rank();
    for (size_t b = 0; b < layout_.buckets.size(); ++b) {
      const int bucket = static_cast<int>(b);
      add_runs(shard_grads_[b], layout_.shard_offset(bucket, shard), layout_.shard_ranges(bucket, shard));
    }
    return out;
  }
  for (size_t g = 0; g < layout_.groups.size(); ++g) {
    std::vector<ParamRange> ranges;
    for (size_t i = 0; i < layout_.params.size(); ++i) {
      if (layout_.params[i].group == static_cast<int>(g)) {
        ranges.push_back({static_cast<int>(i), 0, layout_.params[i].numel});
      }
    }
    std::sort(ranges.begin(), ranges.end(), [this](const ParamRange& a, const ParamRange& b) {
      return layout_.params[static_cast<size_t>(a.param)].offset < layout_.params[static_cast<size_t>(b.param)].offset;
    });
    add_runs(grads_[g], 0, ranges);
  }
  return out;
}

void FlatAdamW::zero_grad() {
  for (at::Tensor& grads : grads_) {
    grads.zero_();
  }
}

at::Tensor FlatAdamW::bucket_grads(int b) const {
  const FlatBucket& bucket = layout_.buckets[static_cast<size_t>(b)];
  return grads_[static_cast<size_t>(bucket.group)].narrow(0, bucket.offset, bucket.numel);
}

at::Tensor FlatAdamW::bucket_params(int b) const {
  const FlatBucket& bucket = layout_.buckets[static_cast<size_t>(b)];
  return params_[static_cast<size_t>(bucket.group)].narrow(0, bucket.offset, bucket.numel);
}

at::Tensor FlatAdamW::shard_grads(int b) const {
  if (!options_.zero) {
    throw Error("FlatAdamW::shard_grads: the optimizer state is not sharded (parallel.zero = 0)");
  }
  return shard_grads_[static_cast<size_t>(b)];
}

at::Tensor FlatAdamW::grad_square_sum() const {
  if (norm_grads_.empty()) {  // this rank counts none of its elements
    return at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(steps_.device()));
  }
  // Per-tensor norms in float32 (one kernel), their squares summed in float64.
  return at::stack(at::_foreach_norm(norm_grads_, 2)).to(at::kDouble).square().sum();
}

void FlatAdamW::step(double lr, const std::optional<at::Tensor>& clip_coef, const at::Tensor& found_inf) {
  const c10::NoGradGuard no_grad;
  // As torch.optim.AdamW(fused=True) does: count the step, update unless found_inf, and uncount it if skipped.
  steps_.add_(1);
  for (size_t g = 0; g < state_.size(); ++g) {
    GroupState& state = state_[g];
    if (clip_coef) {
      at::_foreach_mul_(state.grads, *clip_coef);
    }
    const std::vector<at::Tensor> steps(state.params.size(), steps_);
    at::_fused_adamw_(state.params, state.grads, state.exp_avg, state.exp_avg_sq, /*max_exp_avg_sqs=*/{}, steps, lr,
                      settings_.beta1, settings_.beta2, layout_.groups[g].decay ? settings_.weight_decay : 0.0,
                      settings_.eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, found_inf);
  }
  steps_.sub_(found_inf.reshape({}));
  if (!options_.zero || comm_.size() == 1) {
    return;
  }
  // Every rank updated its shard of each bucket; gather them all back into every rank's parameters.
  const int64_t shard = comm_.rank();
  std::vector<std::unique_ptr<launch::Work>> works;
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    const int bucket = static_cast<int>(b);
    at::Tensor all = bucket_params(bucket);
    const at::Tensor mine = all.narrow(0, shard * layout_.shard_numel(bucket), layout_.shard_numel(bucket)).clone();
    works.push_back(comm_.all_gather_async(mine, all));
  }
  for (auto& work : works) {
    work->wait();
  }
}

std::vector<StateSlice> FlatAdamW::slices(bool only_own_shard) {
  std::vector<StateSlice> out;
  const int64_t shard = comm_.rank();
  if (!options_.zero && !only_own_shard) {
    for (size_t i = 0; i < layout_.params.size(); ++i) {
      const FlatParam& p = layout_.params[i];
      const GroupState& state = state_[static_cast<size_t>(p.group)];
      out.push_back({static_cast<int>(i), 0, p.numel,
                     params_[static_cast<size_t>(p.group)].narrow(0, p.offset, p.numel),
                     state.exp_avg[0].narrow(0, p.offset, p.numel), state.exp_avg_sq[0].narrow(0, p.offset, p.numel)});
    }
    return out;
  }
  std::vector<int> index_in_group(layout_.buckets.size(), 0);
  for (const FlatGroup& group : layout_.groups) {
    for (size_t k = 0; k < group.buckets.size(); ++k) {
      index_in_group[static_cast<size_t>(group.buckets[k])] = static_cast<int>(k);
    }
  }
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    const int bucket = static_cast<int>(b);
    const auto g = static_cast<size_t>(layout_.buckets[b].group);
    const GroupState& state = state_[g];
    const int64_t shard_begin = layout_.shard_offset(bucket, shard);
    for (const ParamRange& range : layout_.shard_ranges(bucket, shard)) {
      const FlatParam& p = layout_.params[static_cast<size_t>(range.param)];
      const int64_t at_buffer = p.offset + range.begin;
      const int64_t length = range.end - range.begin;
      // Replicated state is one tensor per group; sharded state one per bucket, starting at the shard.
      const at::Tensor& exp_avg =
          options_.zero ? state.exp_avg[static_cast<size_t>(index_in_group[b])] : state.exp_avg[0];
      const at::Tensor& exp_avg_sq =
          options_.zero ? state.exp_avg_sq[static_cast<size_t>(index_in_group[b])] : state.exp_avg_sq[0];
      const int64_t at_state = options_.zero ? at_buffer - shard_begin : at_buffer;
      out.push_back({range.param, range.begin, range.end, params_[g].narrow(0, at_buffer, length),
                     exp_avg.narrow(0, at_state, length), exp_avg_sq.narrow(0, at_state, length)});
    }
  }
  return out;
}

std::vector<StateSlice> FlatAdamW::held_slices() {
  return slices(/*only_own_shard=*/false);
}

std::vector<StateSlice> FlatAdamW::written_slices() {
  return slices(/*only_own_shard=*/true);
}

int64_t FlatAdamW::step_count() const {
  return static_cast<int64_t>(steps_.item<float>());
}

void FlatAdamW::set_step_count(int64_t steps) {
  steps_.fill_(static_cast<double>(steps));
}

int64_t FlatAdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const GroupState& state : state_) {
    for (size_t i = 0; i < state.exp_avg.size(); ++i) {
      bytes += static_cast<int64_t>(state.exp_avg[i].nbytes() + state.exp_avg_sq[i].nbytes());
    }
  }
  return bytes;
}

}  // namespace mlagpt::trainer
