# Use ccache when present. The sloppiness settings let ccache hit with precompiled headers.
find_program(BEITV2_CCACHE ccache)
if(BEITV2_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      ${BEITV2_CCACHE})
  message(STATUS "beitv2: using ccache (${BEITV2_CCACHE})")
endif()
