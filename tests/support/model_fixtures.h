// Helpers for model tests: comparing tensors by relative error, reading reference fixtures, and small configs.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "data/hdf5_file.h"
#include "model/gpt.h"

namespace mlagpt::testing {

// max |a - b| / max |b| (b the reference); 0 when both are all zeros.
double relative_error(const at::Tensor& actual, const at::Tensor& reference);

// Reads a float32/int64 dataset of any rank (scalars too) into a CPU tensor.
at::Tensor read_float_tensor(const data::h5::File& file, const std::string& name);
at::Tensor read_long_tensor(const data::h5::File& file, const std::string& name);

// Tiny configs of every attention kind, with positions = rope unless said otherwise.
model::ModelConfig tiny_config(model::AttentionKind kind);

// Multiplies every weight matrix by `factor` so that attention is far from uniform, and moves biases and norm
// weights by N(0, 0.1), so that errors show.
void sharpen(model::Gpt& model, double factor);

}  // namespace mlagpt::testing
