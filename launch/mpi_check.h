// MLAGPT_MPI_CHECK(call): runs an MPI call and throws mlagpt::MpiError with MPI's error string, the expression,
// file, line, rank and host when it does not return MPI_SUCCESS. (Communicators are created with
// MPI_ERRORS_RETURN so that errors reach this check instead of aborting the job inside MPI.)
#pragma once

#include <mpi.h>

#include <string>

#include "launch/error.h"

namespace mlagpt::launch {

inline std::string mpi_error_string(int code) {
  // MPI_Error_string may only be called between MPI_Init and MPI_Finalize.
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized == 0 || finalized != 0) {
    return "MPI error code " + std::to_string(code);
  }
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    return "MPI error " + std::to_string(code);
  }
  return std::string(text, static_cast<size_t>(length));
}

}  // namespace mlagpt::launch

#define MLAGPT_MPI_CHECK(call)                                                                    \
  do {                                                                                            \
    const int mlagpt_mpi_rc_ = (call);                                                            \
    if (mlagpt_mpi_rc_ != MPI_SUCCESS) {                                                          \
      throw ::mlagpt::MpiError(::mlagpt::describe_failure(                                        \
          "MPI", #call, ::mlagpt::launch::mpi_error_string(mlagpt_mpi_rc_), __FILE__, __LINE__)); \
    }                                                                                             \
  } while (0)
