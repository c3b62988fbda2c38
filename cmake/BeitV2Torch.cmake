# Find LibTorch >= 2.4 and wrap it once as beitv2::torch (an INTERFACE target with SYSTEM includes).
#
# Where LibTorch comes from, in order:
#   1. CMAKE_PREFIX_PATH or Torch_DIR pointing at an official LibTorch distribution (or any TorchConfig.cmake);
#   2. otherwise the Python torch found on PATH (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'),
#      which is what scripts/setup.sh installs (torch==2.13.0, CPU) in ~/.cache/beitv2/build-env.
set(BEITV2_MIN_TORCH_VERSION 2.4)

find_package(Torch ${BEITV2_MIN_TORCH_VERSION} QUIET CONFIG)
if(NOT Torch_FOUND)
  # The first python3 on PATH (an activated virtual environment wins), or -DBEITV2_PYTHON=/path/to/python.
  find_program(BEITV2_PYTHON NAMES python3 python)
  if(BEITV2_PYTHON)
    execute_process(
      COMMAND ${BEITV2_PYTHON} -c "import torch; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _beitv2_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _beitv2_torch_rc ERROR_QUIET)
    if(_beitv2_torch_rc EQUAL 0 AND _beitv2_torch_prefix)
      find_package(Torch ${BEITV2_MIN_TORCH_VERSION} QUIET CONFIG PATHS ${_beitv2_torch_prefix} NO_DEFAULT_PATH)
    endif()
  endif()
endif()
if(NOT Torch_FOUND)
  message(FATAL_ERROR
    "beitv2: LibTorch >= ${BEITV2_MIN_TORCH_VERSION} not found${Torch_VERSION}. Either\n"
    "  (a) point CMake at an official LibTorch: -DCMAKE_PREFIX_PATH=/path/to/libtorch (or -DTorch_DIR=.../share/cmake/Torch), or\n"
    "  (b) have a Python with torch on PATH (scripts/setup.sh installs torch==2.13.0 into ~/.cache/beitv2/build-env).\n"
    "A LibTorch older than ${BEITV2_MIN_TORCH_VERSION} is rejected.")
endif()
message(STATUS "beitv2: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

# The imported torch target carries its include directories (SYSTEM, as for every imported target) and flags.
add_library(beitv2_torch INTERFACE)
add_library(beitv2::torch ALIAS beitv2_torch)
target_link_libraries(beitv2_torch INTERFACE ${TORCH_LIBRARIES})
set_target_properties(beitv2_torch PROPERTIES EXPORT_NAME torch)
