// FlatLayout: where every parameter lives in the flat buffers the optimizer and the gradient reduction work on.
//
// Parameters are grouped by weight decay (decay / no decay: one AdamW call each) and, within a group, packed into
// buckets of about `bucket_bytes`, filled in reverse registration order (the order backward produces gradients
// in, as PyTorch DDP does), so that the first bucket is complete first. Buckets are numbered in the order they
// close, which is the order they are reduced in on every rank. A group's buffer is its buckets back to back.
//
// Every parameter starts at a multiple of kAlignment elements, and every bucket's length is a multiple of
// kAlignment * shards, so that a bucket splits into `shards` equal, aligned shards: shard s of bucket b is
// [offset + s * n / shards, offset + (s + 1) * n / shards) of its group's buffer (ZeRO-1 gives data-parallel
// rank s that shard of every bucket). The padding is zero and belongs to no parameter.
//
// The plan depends only on the parameters' names, shapes and groups and on the two numbers, so every rank that
// builds the same model computes the same layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlagpt::trainer {

// What the layout needs to know of a parameter.
struct ParameterInfo {
  std::string name;
  std::vector<int64_t> shape;
  bool decay = true;
};

struct FlatParam {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  int group = 0;
  int bucket = 0;
  int64_t offset = 0;  // in its group's buffer, elements
};

struct FlatBucket {
  int group = 0;
  int64_t offset = 0;       // in its group's buffer
  int64_t numel = 0;        // padded: a multiple of kAlignment * shards
  std::vector<int> params;  // indices into FlatLayout::params, in the order they were packed
};

struct FlatGroup {
  bool decay = true;
  int64_t numel = 0;         // the buffer's length: its buckets' numel summed
  std::vector<int> buckets;  // indices into FlatLayout::buckets, in buffer order
};

// A range of elements of one parameter, flattened: [begin, end).
struct ParamRange {
  int param = 0;
  int64_t begin = 0;
  int64_t end = 0;
};

struct FlatLayout {
  static constexpr int64_t kAlignment = 16;  // elements: 64 bytes of float32

  std::vector<FlatParam> params;  // in registration order
  std::vector<FlatBucket> buckets;
  std::vector<FlatGroup> groups;
  int64_t shards = 1;

  int64_t shard_numel(int bucket) const { return buckets[static_cast<size_t>(bucket)].numel / shards; }
  // Offset of shard `shard` of `bucket` in its group's buffer.
  int64_t shard_offset(int bucket, int64_t shard) const {
    return buckets[static_cast<size_t>(bucket)].offset + shard * shard_numel(bucket);
  }
  // The pieces of parameters that shard `shard` of `bucket` holds, in buffer order (padding left out).
  std::vector<ParamRange> shard_ranges(int bucket, int64_t shard) const;
  // Elements of the parameters (no padding).
  int64_t parameter_numel() const;
  // Elements of all buffers (padding included).
  int64_t padded_numel() const;
};

// Plans the layout of `parameters` (in registration order) for buckets of about `bucket_bytes` of float32
// gradients and `shards` shards per bucket. Throws mlagpt::Error on an empty list, a repeated name, or shards < 1.
FlatLayout plan_flat_layout(const std::vector<ParameterInfo>& parameters, int64_t bucket_bytes, int64_t shards);

}  // namespace mlagpt::trainer
