# mlagpt_add_library(NAME SOURCES ... DEPS ...): one library per folder, with the project's warnings, sanitizers
# and LibTorch flags. Our own code is compiled with -Wall -Wextra (and -Werror in CI); third-party headers are
# included as SYSTEM so their warnings do not count.

set(MLAGPT_SANITIZER_FLAGS "")
if(MLAGPT_SANITIZE_ADDRESS)
  list(APPEND MLAGPT_SANITIZER_FLAGS -fsanitize=address -fno-omit-frame-pointer)
endif()
if(MLAGPT_SANITIZE_UNDEFINED)
  list(APPEND MLAGPT_SANITIZER_FLAGS -fsanitize=undefined -fno-sanitize-recover=undefined)
endif()

function(mlagpt_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter -Wno-missing-field-initializers ${MLAGPT_TORCH_CXX_FLAGS}>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${MLAGPT_WARNINGS_AS_ERRORS}>>:-Werror>
    $<$<COMPILE_LANGUAGE:CXX>:${MLAGPT_SANITIZER_FLAGS}>)
  target_link_options(${target} PRIVATE ${MLAGPT_SANITIZER_FLAGS})
  # The PyPI libtorch.so exports copies of some libstdc++ symbols (std::filesystem, std::chrono::tzdb) from the
  # newer toolchain it was built with; whichever library comes first in the load order wins, and its
  # std::filesystem::remove_all crashes when called from our code. Putting the system libstdc++ first in the
  # executable's needed libraries makes every such symbol resolve to it.
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    target_link_options(${target} PRIVATE "LINKER:--push-state,--no-as-needed,-lstdc++,--pop-state")
  endif()
  if(MLAGPT_CUDA)
    target_compile_definitions(${target} PUBLIC MLAGPT_WITH_CUDA=1)
  endif()
endfunction()

function(mlagpt_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} ${ARG_SOURCES})
  add_library(mlagpt::${name} ALIAS ${name})
  target_include_directories(${name} PUBLIC "${PROJECT_SOURCE_DIR}" "${PROJECT_BINARY_DIR}/generated")
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  mlagpt_target_defaults(${name})
endfunction()
