# Builds and runs the consumer project in CONSUMER_SOURCE one way (MODE):
#   find_package      against the install tree PREFIX
#   add_subdirectory  of SB_SOURCE_DIR
#   pkg_config        a C99 program compiled with `pkg-config --cflags --libs sparsebudget`
# in BUILD (wiped first), with -j2.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE "${BUILD}")
file(MAKE_DIRECTORY "${BUILD}")

if(MODE STREQUAL "pkg_config")
  find_program(PKG_CONFIG pkg-config REQUIRED)
  file(GLOB_RECURSE pc "${PREFIX}/*/sparsebudget.pc")
  if(NOT pc)
    message(FATAL_ERROR "no sparsebudget.pc under ${PREFIX}")
  endif()
  list(GET pc 0 pc)
  get_filename_component(pcdir "${pc}" DIRECTORY)
  set(ENV{PKG_CONFIG_PATH} "${pcdir}")
  execute_process(COMMAND ${PKG_CONFIG} --modversion sparsebudget OUTPUT_VARIABLE ver
                  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT ver STREQUAL SB_VERSION)
    message(FATAL_ERROR "pkg-config --modversion gave '${ver}' (rc ${rc}), expected ${SB_VERSION}")
  endif()
  execute_process(COMMAND ${PKG_CONFIG} --cflags --libs sparsebudget OUTPUT_VARIABLE flags
                  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config --cflags --libs sparsebudget failed")
  endif()
  message(STATUS "pkg-config flags: ${flags}")
  separate_arguments(flags UNIX_COMMAND "${flags}")
  separate_arguments(extra UNIX_COMMAND "${EXTRA_FLAGS}")
  # The library goes after the object: flags from pkg-config come last, as a Makefile would do.
  run(${C_COMPILER} -std=c99 -Wall -Wextra -pedantic -Werror ${extra} -o "${BUILD}/consumer_c"
      "${CONSUMER_SOURCE}/main.c" ${flags})
  run("${BUILD}/consumer_c")
  return()
endif()

# add_subdirectory compiles the whole library again: without optimisation or debug info (a
# build type with empty flags), since this test checks the packaging, not the speed (1.8x less
# compile CPU than Release, measured on calibrate.cpp).
if(MODE STREQUAL "add_subdirectory")
  set(build_type -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG= -DCMAKE_CXX_FLAGS_DEBUG=)
else()
  set(build_type -DCMAKE_BUILD_TYPE=Release)
endif()
set(args -S "${CONSUMER_SOURCE}" -B "${BUILD}" -G "${GENERATOR}" ${build_type}
    -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DSB_MODE=${MODE}
    -DSB_EXPECT_VERSION=${SB_VERSION})
if(EXTRA_FLAGS)
  list(APPEND args "-DCMAKE_C_FLAGS=${EXTRA_FLAGS}" "-DCMAKE_CXX_FLAGS=${EXTRA_FLAGS}"
       "-DCMAKE_EXE_LINKER_FLAGS=${EXTRA_FLAGS}")
endif()
if(MODE STREQUAL "find_package")
  list(APPEND args "-DCMAKE_PREFIX_PATH=${PREFIX}")
else()
  list(APPEND args "-DSB_SOURCE_DIR=${SB_SOURCE_DIR}")
  if(SANITIZE)
    list(APPEND args "-DSPARSEBUDGET_SANITIZE=${SANITIZE}")
  endif()
endif()
run(${CMAKE_COMMAND} ${args})
run(${CMAKE_COMMAND} --build "${BUILD}" -j2)
run("${BUILD}/consumer_cpp")
run("${BUILD}/consumer_c")
