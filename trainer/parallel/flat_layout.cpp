#include "trainer/parallel/flat_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <set>

#include "launch/error.h"

namespace mlagpt::trainer {
namespace {

int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

}  // namespace

std::vector<ParamRange> FlatLayout::shard_ranges(int bucket, int64_t shard) const {
  const FlatBucket& b = buckets[static_cast<size_t>(bucket)];
  const int64_t begin = shard_offset(bucket, shard);
  const int64_t end = begin + shard_numel(bucket);
  std::vector<ParamRange> ranges;
  for (const int index : b.params) {
    const FlatParam& p = params[static_cast<size_t>(index)];
    const int64_t lo = std::max(begin, p.offset);
    const int64_t hi = std::min(end, p.offset + p.numel);
    if (lo < hi) {
      ranges.push_back({index, lo - p.offset, hi - p.offset});
    }
  }
  std::sort(ranges.begin(), ranges.end(), [this](const ParamRange& a, const ParamRange& b) {
    return params[static_cast<size_t>(a.param)].offset < params[static_cast<size_t>(b.param)].offset;
  });
  return ranges;
}

int64_t FlatLayout::parameter_numel() const {
  return std::accumulate(params.begin(), params.end(), int64_t{0},
                         [](int64_t sum, const FlatParam& p) { return sum + p.numel; });
}

int64_t FlatLayout::padded_numel() const {
  return std::accumulate(groups.begin(), groups.end(), int64_t{0},
                         [](int64_t sum, const FlatGroup& g) { return sum + g.numel; });
}

FlatLayout plan_flat_layout(const std::vector<ParameterInfo>& parameters, int64_t bucket_bytes, int64_t shards) {
  if (parameters.empty()) {
    throw Error("plan_flat_layout: no parameters");
  }
  if (shards < 1) {
    throw Error(fmt::format("plan_flat_layout: shards must be at least 1, got {}", shards));
  }
  const int64_t bucket_elements = std::max<int64_t>(1, bucket_bytes / static_cast<int64_t>(sizeof(float)));
  FlatLayout layout;
  layout.shards = shards;
  std::set<std::string> names;
  for (const ParameterInfo& info : parameters) {
    if (!names.insert(info.name).second) {
      throw Error(fmt::format("plan_flat_layout: parameter {} is listed twice", info.name));
    }
    FlatParam p;
    p.name = info.name;
    p.shape = info.shape;
    p.numel = std::accumulate(info.shape.begin(), info.shape.end(), int64_t{1}, std::multiplies<>());
    layout.params.push_back(std::move(p));
  }
  // Groups in a fixed order (decay first) so that their indices do not depend on which parameter comes first.
  int group_of[2] = {-1, -1};  // [decay]
  for (const bool decay : {true, false}) {
    const bool any = std::any_of(parameters.begin(), parameters.end(),
                                 [decay](const ParameterInfo& info) { return info.decay == decay; });
    if (any) {
      group_of[decay ? 1 : 0] = static_cast<int>(layout.groups.size());
      layout.groups.push_back(FlatGroup{.decay = decay, .numel = 0, .buckets = {}});
    }
  }
  // One open bucket per group; a bucket closes when it holds bucket_elements, and takes the next index then.
  std::vector<FlatBucket> open(layout.groups.size());
  std::vector<int64_t> filled(layout.groups.size(), 0);
  const auto close = [&](size_t g) {
    FlatBucket& bucket = open[g];
    if (bucket.params.empty()) {
      return;
    }
    bucket.group = static_cast<int>(g);
    bucket.offset = layout.groups[g].numel;
    bucket.numel = round_up(filled[g], FlatLayout::kAlignment * shards);
    // The parameters' offsets were counted from the bucket's start.
    for (const int index : bucket.params) {
      layout.params[static_cast<size_t>(index)].offset += bucket.offset;
      layout.params[static_cast<size_t>(index)].bucket = static_cast<int>(layout.buckets.size());
    }
    layout.groups[g].numel += bucket.numel;
    layout.groups[g].buckets.push_back(static_cast<int>(layout.buckets.size()));
    layout.buckets.push_back(std::move(bucket));
    bucket = FlatBucket{};
    filled[g] = 0;
  };
  for (size_t i = parameters.size(); i-- > 0;) {
    const size_t g = static_cast<size_t>(group_of[parameters[i].decay ? 1 : 0]);
    FlatParam& p = layout.params[i];
    p.group = static_cast<int>(g);
    filled[g] = round_up(filled[g], FlatLayout::kAlignment);
    p.offset = filled[g];
    filled[g] += p.numel;
    open[g].params.push_back(static_cast<int>(i));
    if (filled[g] >= bucket_elements) {
      close(g);
    }
  }
  for (size_t g = 0; g < open.size(); ++g) {
    close(g);
  }
  return layout;
}

}  // namespace mlagpt::trainer
