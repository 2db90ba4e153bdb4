// The exception types every mlagpt library throws, and the check macro for our own invariants.
//
// Library code never exits: it throws one of these, and only `main()` decides how the process ends (it logs the
// message, aborts the communicators and exits non-zero). Messages name the file, field or value at fault; the
// backend checks (MLAGPT_MPI_CHECK in mpi_check.h, MLAGPT_CUDA_CHECK / MLAGPT_NCCL_CHECK / MLAGPT_CUSOLVER_CHECK in
// cuda_check.h, MLAGPT_HDF5_CHECK in data/hdf5_file.h) add the failing expression, file, line, rank and host.
#pragma once

#include <stdexcept>
#include <string>

namespace mlagpt {

// Base of everything mlagpt throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A configuration value or combination that cannot work (names the field and the values).
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A file that is missing, unreadable, unwritable, or not what it claims to be (names the path).
class IoError : public Error {
 public:
  using Error::Error;
};

// Data that is well-formed as a file but wrong as content: a token id out of range, a corrupt shard.
class DataError : public Error {
 public:
  using Error::Error;
};

// A failed call into a backend library. The subclasses say which one.
class BackendError : public Error {
 public:
  using Error::Error;
};
class MpiError : public BackendError {
 public:
  using BackendError::BackendError;
};
class CudaError : public BackendError {
 public:
  using BackendError::BackendError;
};
class NcclError : public BackendError {
 public:
  using BackendError::BackendError;
};
class CusolverError : public BackendError {
 public:
  using BackendError::BackendError;
};
class Hdf5Error : public BackendError {
 public:
  using BackendError::BackendError;
};

// "rank 3 on host gpu-07" once MPI is initialized, "host gpu-07" before (or without) it. Used in error messages.
std::string process_description();

// "<what>: <expr> failed (<detail>) at <file>:<line> on rank R, host H" — the common text of the check macros.
std::string describe_failure(const char* what, const char* expr, const std::string& detail, const char* file, int line);

}  // namespace mlagpt

// Checks an invariant of our own code or of its inputs; throws mlagpt::Error naming the condition.
#define MLAGPT_CHECK(cond, message)                                                                     \
  do {                                                                                                  \
    if (!(cond)) {                                                                                      \
      throw ::mlagpt::Error(::mlagpt::describe_failure("check", #cond, (message), __FILE__, __LINE__)); \
    }                                                                                                   \
  } while (0)
