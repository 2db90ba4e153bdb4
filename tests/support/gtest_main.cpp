// The main() of every test executable. Under mpiexec it initializes MPI (through launch::Runtime), runs the tests on
// every rank, and makes every rank return failure when any rank failed, so that one failing rank fails the CTest
// test. Only rank 0 prints the progress of passing tests; every rank prints its failures.
//
// Exit status, which is all CTest reads (no output pattern): 1 when any test failed, on any rank; kSkippedStatus
// when no test failed and every test that ran skipped (GTEST_SKIP: a gpu test without a device), which CTest's
// SKIP_RETURN_CODE reports as skipped; 0 otherwise. So a skip can never turn a failure into a pass: an executable
// whose tests partly pass and partly skip passes, and lists its skips in its output.
#include <gtest/gtest.h>
#include <mpi.h>

#include "launch/runtime.h"
#include "support/test_runtime.h"

namespace {

// Forwards only failures (and the final summary) for ranks other than 0.
class FailuresOnly : public testing::EmptyTestEventListener {
 public:
  explicit FailuresOnly(testing::TestEventListener* inner, int rank) : inner_(inner), rank_(rank) {}
  ~FailuresOnly() override { delete inner_; }
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %d] ", rank_);
      inner_->OnTestPartResult(result);
    }
  }

 private:
  testing::TestEventListener* inner_;
  int rank_;
};

// tests/CMakeLists.txt sets SKIP_RETURN_CODE to this (77, the skip status of automake and meson).
constexpr int kSkippedStatus = 77;

const mlagpt::launch::Runtime* the_runtime = nullptr;

}  // namespace

const mlagpt::launch::Runtime& mlagpt::testing::runtime() {
  return *the_runtime;
}

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  mlagpt::launch::Runtime runtime(&argc, &argv);
  the_runtime = &runtime;
  const auto& info = runtime.info();
  if (info.rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    listeners.Append(new FailuresOnly(listeners.Release(listeners.default_result_printer()), info.rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  const testing::UnitTest& unit = *testing::UnitTest::GetInstance();
  int all_skipped = !failed && unit.skipped_test_count() > 0 && unit.successful_test_count() == 0 ? 1 : 0;
  if (info.mpi) {
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &all_skipped, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  }
  if (failed) {
    return 1;
  }
  return all_skipped ? kSkippedStatus : 0;
}
