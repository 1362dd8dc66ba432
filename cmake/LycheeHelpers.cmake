# SPDX-License-Identifier: Apache-2.0
# Target helpers: one small library per folder, explicit deps, our warnings on our code only.
include_guard(GLOBAL)

set(LYCHEE_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wno-unused-parameter)
if(LYCHEE_WERROR)
  list(APPEND LYCHEE_WARNINGS -Werror)
endif()
# GCC's -Wmaybe-uninitialized gives false positives under the sanitizers' instrumentation (in
# Boost.Beast's parser, for one); the sanitizers themselves check what it guesses at.
if(LYCHEE_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND LYCHEE_WARNINGS -Wno-maybe-uninitialized)
endif()

# lychee_cc_library(NAME name SRCS ... DEPS ...)
function(lychee_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SRCS})
  target_include_directories(${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${A_NAME} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LYCHEE_WARNINGS}>)
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
endfunction()

# lychee_cc_binary(NAME name SRCS ... DEPS ...): installed into build/bin.
function(lychee_cc_binary)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_compile_options(${A_NAME} PRIVATE ${LYCHEE_WARNINGS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS})
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${LYCHEE_BIN_DIR})
endfunction()

# lychee_cc_test(NAME name SRCS ... DEPS ... [LABELS ...] [TIMEOUT s]): one CTest target per file.
# Tests run from the source root so they find tests/data, tests/golden and models/.
function(lychee_cc_test)
  if(NOT LYCHEE_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_compile_options(${A_NAME} PRIVATE ${LYCHEE_WARNINGS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  add_test(NAME ${A_NAME} COMMAND ${A_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  # tests/unit/<folder> tests carry the folder's name as a label too (ctest -L "engine|server").
  get_filename_component(folder ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  get_filename_component(parent ${CMAKE_CURRENT_SOURCE_DIR} DIRECTORY)
  if(parent MATCHES "tests/unit$")
    list(APPEND A_LABELS ${folder})
  endif()
  set_tests_properties(${A_NAME} PROPERTIES TIMEOUT ${A_TIMEOUT} LABELS "${A_LABELS}"
                       ENVIRONMENT "LYCHEE_BIN_DIR=${LYCHEE_BIN_DIR};OPENBLAS_NUM_THREADS=2")
endfunction()
