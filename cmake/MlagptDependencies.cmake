# Finds every dependency of DESIGN.md. All come from Debian packages, except LibTorch, which comes from the
# PyPI torch wheel in <repo>/.venv (deploy/setup.sh) or from any LibTorch that Torch_DIR points at.

# --- LibTorch ------------------------------------------------------------------------------------------------
# The venv's python also writes the PyTorch reference fixtures for the tests.
if(NOT MLAGPT_PYTHON)
  set(MLAGPT_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python")
endif()
if(NOT Torch_DIR AND NOT DEFINED ENV{Torch_DIR})
  if(NOT EXISTS "${MLAGPT_PYTHON}")
    message(FATAL_ERROR "LibTorch not found: ${MLAGPT_PYTHON} does not exist. Run deploy/setup.sh, "
                        "or set Torch_DIR to a LibTorch's share/cmake/Torch, or MLAGPT_PYTHON to a python with torch.")
  endif()
  execute_process(COMMAND "${MLAGPT_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _torch_rc
                  ERROR_VARIABLE _torch_err)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "${MLAGPT_PYTHON} cannot import torch (${_torch_err}). Run deploy/setup.sh.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
endif()

# A CUDA-enabled LibTorch looks for the CUDA toolkit while it is found; decide first whether we want CUDA.
include(CheckLanguage)
set(MLAGPT_CUDA OFF)
if(NOT MLAGPT_WITH_CUDA STREQUAL "OFF")
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(MLAGPT_CUDA ON)
  elseif(MLAGPT_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MLAGPT_WITH_CUDA=ON but no CUDA compiler (nvcc) was found; set CMAKE_CUDA_COMPILER or use OFF")
  endif()
endif()

# Without an arch list, a CUDA LibTorch compiles and runs a probe for the local GPU while it is found, which fails
# on build machines without one. Hopper (sm_90) is what mlagpt targets; the gpu preset sets it explicitly.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "9.0")
endif()
find_package(Torch REQUIRED)
# LibTorch's include directory also carries its own copies of third-party headers (fmt 12 among them), which would
# shadow Debian's fmt 9 that spdlog is built on and mix two fmt ABIs in one program. Expose torch/include through
# a mirror of symbolic links that leaves those out, on every imported torch target.
set(_torch_include_root "")
foreach(_dir IN LISTS TORCH_INCLUDE_DIRS)
  if(EXISTS "${_dir}/ATen" AND EXISTS "${_dir}/c10")
    set(_torch_include_root "${_dir}")
  endif()
endforeach()
if(_torch_include_root)
  set(_mirror "${PROJECT_BINARY_DIR}/torch_include")
  file(REMOVE_RECURSE "${_mirror}")
  file(MAKE_DIRECTORY "${_mirror}")
  file(GLOB _entries RELATIVE "${_torch_include_root}" "${_torch_include_root}/*")
  foreach(_entry IN LISTS _entries)
    if(NOT _entry MATCHES "^(fmt|spdlog|google|gtest|gmock|benchmark|nlohmann)$")
      file(CREATE_LINK "${_torch_include_root}/${_entry}" "${_mirror}/${_entry}" SYMBOLIC)
    endif()
  endforeach()
  foreach(_target IN ITEMS torch torch_cpu torch_cuda c10 c10_cuda torch_cpu_library torch_cuda_library)
    if(TARGET ${_target})
      get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
      if(_dirs)
        list(TRANSFORM _dirs REPLACE "^${_torch_include_root}$" "${_mirror}")
        set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
      endif()
    endif()
  endforeach()
endif()

# torch's flags carry the C++ ABI define that every object linking LibTorch must share.
separate_arguments(MLAGPT_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")

if(MLAGPT_CUDA)
  if(NOT TARGET torch_cuda)
    if(MLAGPT_WITH_CUDA STREQUAL "ON")
      message(FATAL_ERROR "MLAGPT_WITH_CUDA=ON but the LibTorch found (${Torch_DIR}) has no CUDA")
    endif()
    message(STATUS "mlagpt: nvcc found but LibTorch has no CUDA: building without CUDA")
    set(MLAGPT_CUDA OFF)
  endif()
endif()
if(MLAGPT_CUDA)
  # Our CUDA code is host code calling the CUDA runtime, NCCL and cuSOLVER, compiled by the C++ compiler.
  find_package(CUDAToolkit REQUIRED)
  find_path(MLAGPT_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} REQUIRED)
  find_library(MLAGPT_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} REQUIRED)
  add_library(mlagpt_nccl INTERFACE)
  target_include_directories(mlagpt_nccl SYSTEM INTERFACE "${MLAGPT_NCCL_INCLUDE_DIR}")
  target_link_libraries(mlagpt_nccl INTERFACE "${MLAGPT_NCCL_LIBRARY}")
  add_library(mlagpt::nccl ALIAS mlagpt_nccl)
endif()
message(STATUS "mlagpt: CUDA ${MLAGPT_CUDA} (MLAGPT_WITH_CUDA=${MLAGPT_WITH_CUDA}), LibTorch ${Torch_VERSION}")

# --- Debian packages -----------------------------------------------------------------------------------------
find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(prometheus-cpp REQUIRED CONFIG)
find_package(spdlog REQUIRED CONFIG)
find_package(fmt REQUIRED CONFIG)
find_package(CLI11 REQUIRED CONFIG)
find_package(nlohmann_json REQUIRED CONFIG)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
# prometheus-cpp's CMake package carries no version; its pkg-config file does.
pkg_check_modules(PROMETHEUS_CPP_CORE QUIET prometheus-cpp-core)
set(MLAGPT_PROMETHEUS_CPP_VERSION "${PROMETHEUS_CPP_CORE_VERSION}")
if(NOT MLAGPT_PROMETHEUS_CPP_VERSION)
  set(MLAGPT_PROMETHEUS_CPP_VERSION "unknown")
endif()

add_library(mlagpt_hdf5 INTERFACE)
target_include_directories(mlagpt_hdf5 SYSTEM INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(mlagpt_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(mlagpt_hdf5 INTERFACE ${HDF5_DEFINITIONS})
add_library(mlagpt::hdf5 ALIAS mlagpt_hdf5)
