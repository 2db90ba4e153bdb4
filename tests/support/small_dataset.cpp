#include "support/small_dataset.h"

#include <fstream>
#include <string>

#include "data/prepare.h"

namespace mlagpt::testing {

std::filesystem::path prepare_small_byte_dataset(const std::filesystem::path& dir, double val_fraction) {
  std::filesystem::create_directories(dir / "text");
  for (int f = 0; f < 4; ++f) {
    std::ofstream out(dir / "text" / ("part" + std::to_string(f) + ".txt"));
    for (int i = 0; i < 120; ++i) {
      out << "the " << (i * 7 + f) % 13 << " quick foxes jump over " << (i * 3) % 11 << " lazy dogs, twice.\n";
    }
  }
  data::PrepareConfig prepare;
  prepare.inputs = {(dir / "text").string()};
  prepare.tokenizer = "byte";
  prepare.out = dir / "data";
  prepare.val_fraction = val_fraction;
  prepare.threads = 1;
  data::prepare_dataset(prepare);
  return prepare.out;
}

}  // namespace mlagpt::testing
