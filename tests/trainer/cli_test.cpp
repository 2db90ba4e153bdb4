// The mlagpt executable itself: `--version` and `version` list every backend; an unknown command fails with a
// message and a non-zero exit.
#include <gtest/gtest.h>

#include "support/temp_dir.h"

using mlagpt::testing::run_command;

TEST(Cli, VersionListsEveryBackend) {
  for (const char* form : {" --version", " version"}) {
    int status = -1;
    const std::string out = run_command(std::string(MLAGPT_EXECUTABLE) + form + " 2>&1", &status);
    EXPECT_EQ(status, 0) << out;
    for (const char* name : {"mlagpt 0.", "LibTorch", "CUDA", "NCCL", "MPI", "HDF5", "prometheus-cpp"}) {
      EXPECT_NE(out.find(name), std::string::npos) << form << " lacks " << name << ":\n" << out;
    }
  }
}

TEST(Cli, UnknownCommandFails) {
  int status = 0;
  const std::string out = run_command(std::string(MLAGPT_EXECUTABLE) + " frobnicate 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("frobnicate"), std::string::npos) << out;
}
