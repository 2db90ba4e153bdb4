// The process runtime of a test executable: the one main() (support/gtest_main.cpp) made before running the
// tests, with MPI initialized when the executable runs under mpiexec. Tests that build a Trainer or a Checkpointer
// take it from here instead of making another.
#pragma once

#include "launch/runtime.h"

namespace mlagpt::testing {

const launch::Runtime& runtime();

}  // namespace mlagpt::testing
