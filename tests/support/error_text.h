// The message of the mlagpt::Error a call throws, for tests that check what an error names.
#pragma once

#include <functional>
#include <string>

#include "launch/error.h"

namespace mlagpt::testing {

// e.what() of the mlagpt::Error `call` throws, or "no error".
inline std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace mlagpt::testing
