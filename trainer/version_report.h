// `mlagpt --version`: mlagpt's version and, for every backend, what it was built with and what it runs with.
#pragma once

#include <string>

namespace mlagpt::trainer {

std::string version_report();

}  // namespace mlagpt::trainer
