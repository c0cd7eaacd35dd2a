# Compiler flags shared by every meshsync target, and the helpers that declare
# one library per module (Abseil's absl_cc_library, in small).

set(MESHSYNC_WARNINGS -Wall -Wextra -Wpedantic -Werror -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 at -O3 reports std::string concatenation as overlapping memcpy
  # (GCC bug 105329, a false positive in libstdc++'s own code).
  list(APPEND MESHSYNC_WARNINGS -Wno-restrict)
endif()

if(MESHSYNC_SANITIZE)
  set(MESHSYNC_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all
      -fno-omit-frame-pointer)
endif()

# Flags every meshsync target compiles with.
function(meshsync_target_defaults target)
  target_compile_options(${target} PRIVATE ${MESHSYNC_WARNINGS} ${MESHSYNC_SANITIZER_FLAGS})
  target_link_options(${target} PRIVATE ${MESHSYNC_SANITIZER_FLAGS})
endfunction()

# meshsync_cc_library(NAME n SRCS ... DEPS ... [PRIVATE_DEPS ...])
# Declares meshsync_<n> (alias meshsync::<n>) with the public headers on its
# include path. Dependencies are explicit: PUBLIC ones are part of the module's
# interface, PRIVATE ones are not.
function(meshsync_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  set(target meshsync_${ARG_NAME})
  add_library(${target} STATIC ${ARG_SRCS})
  add_library(meshsync::${ARG_NAME} ALIAS ${target})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR}/include
                                       PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${target} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  meshsync_target_defaults(${target})
  if(MESHSYNC_SANITIZE)
    target_link_options(${target} INTERFACE ${MESHSYNC_SANITIZER_FLAGS})
  endif()
endfunction()

# meshsync_cc_test(NAME n SRCS ... DEPS ... [LABELS ...] [ENV ...] [FIXTURES ...])
# One GoogleTest binary per test file, registered with CTest under its labels
# (unit, property, scenario, crash, fuzz) so CI can split or skip groups.
function(meshsync_cc_test)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;LABELS;ENV;FIXTURES" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  meshsync_target_defaults(${ARG_NAME})
  # Only properties with a value: an empty one would shift the list.
  set(properties LABELS "${ARG_LABELS}")
  if(ARG_ENV)
    list(APPEND properties ENVIRONMENT "${ARG_ENV}")
  endif()
  if(ARG_FIXTURES)
    list(APPEND properties FIXTURES_REQUIRED "${ARG_FIXTURES}")
  endif()
  gtest_discover_tests(${ARG_NAME} DISCOVERY_MODE PRE_TEST PROPERTIES ${properties})
endfunction()
