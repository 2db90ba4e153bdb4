#include "launch/error.h"

#include <gtest/gtest.h>

#include "launch/mpi_check.h"

namespace {

int fails_with(int code) {
  return code;
}

}  // namespace

TEST(Error, CheckNamesConditionFileAndHost) {
  const int heads = 3;
  try {
    MLAGPT_CHECK(heads % 2 == 0, "heads must be even");
    FAIL() << "no exception";
  } catch (const mlagpt::Error& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find("heads % 2 == 0"), std::string::npos) << text;
    EXPECT_NE(text.find("heads must be even"), std::string::npos) << text;
    EXPECT_NE(text.find("error_test.cpp"), std::string::npos) << text;
    EXPECT_NE(text.find("host "), std::string::npos) << text;
  }
}

TEST(Error, MpiCheckThrowsMpiErrorWithMpisMessage) {
  try {
    MLAGPT_MPI_CHECK(fails_with(MPI_ERR_COMM));
    FAIL() << "no exception";
  } catch (const mlagpt::MpiError& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find("fails_with(MPI_ERR_COMM)"), std::string::npos) << text;
    EXPECT_NE(text.find(mlagpt::launch::mpi_error_string(MPI_ERR_COMM)), std::string::npos) << text;
    EXPECT_NE(text.find(std::to_string(MPI_ERR_COMM)), std::string::npos) << text;  // MPI is not initialized here
  }
  EXPECT_NO_THROW(MLAGPT_MPI_CHECK(fails_with(MPI_SUCCESS)));
}

TEST(Error, HierarchyLetsCallersCatchByKind) {
  EXPECT_THROW(throw mlagpt::NcclError("x"), mlagpt::BackendError);
  EXPECT_THROW(throw mlagpt::ConfigError("x"), mlagpt::Error);
  EXPECT_THROW(throw mlagpt::IoError("x"), std::runtime_error);
}
