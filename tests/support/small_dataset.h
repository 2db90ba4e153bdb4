// A small byte-level dataset for trainer tests: four files of varied sentences under DIR/text, prepared into DIR/data.
#pragma once

#include <filesystem>

namespace mlagpt::testing {

// Writes the corpus and runs `prepare` on it (byte tokenizer, one thread); `val_fraction` of its four documents go
// to the validation split. Returns DIR/data.
std::filesystem::path prepare_small_byte_dataset(const std::filesystem::path& dir, double val_fraction = 0.25);

}  // namespace mlagpt::testing
