# Precompiled headers (VRAMSCOPE_PCH, on by default). Nearly every translation
# unit includes nlohmann/json.hpp (through tools/tool.h, server/protocol.h,
# common/json_schema.h) and a good part spdlog and the standard containers,
# parsed (and, by clang, instantiated) again in every TU. Measured per TU: gcc
# -O2 -g 9% less CPU over seven TUs (up to 25%: tools/findings/leak_growth.cpp);
# clang -O0 with ASan+UBSan (scripts/test-sanitized.sh) 12.7 -> 8.0 s. They are
# compiled once into vs_pch's header and every C++ target that has the same
# compile definitions for them reuses it (REUSE_FROM); the tests reuse a
# second one that adds Catch2's single header (vs_pch_tests).
# A TU that defines a configuration macro before including one of these
# headers (CATCH_CONFIG_MAIN, CATCH_CONFIG_RUNNER) must skip the PCH.
# Included at the end of the top-level CMakeLists.txt, once every target exists.
option(VRAMSCOPE_PCH "Precompile the third-party headers most translation units include" ON)
if(NOT VRAMSCOPE_PCH)
  return()
endif()

set(VS_PCH_HEADERS
  <algorithm> <chrono> <cstdint> <cstdio> <cstring> <functional> <map> <memory> <optional> <set>
  <string> <string_view> <tuple> <utility> <variant> <vector>
  <nlohmann/json.hpp> <spdlog/spdlog.h>)

# The owner: one empty TU with the link interface (so the compile definitions:
# SPDLOG_COMPILED_LIB, SPDLOG_FMT_EXTERNAL...) every reusing target has.
add_library(vs_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/pch.cpp)
target_link_libraries(vs_pch PRIVATE nlohmann_json::nlohmann_json spdlog::spdlog)
target_precompile_headers(vs_pch PRIVATE ${VS_PCH_HEADERS})

# vs_common is left out: it does not link spdlog, so its definitions differ.
set(VS_PCH_USERS vs_store vs_tracer vs_tools vs_server vramscope
    pipeline_bench trace_generator tool_bench mcp_conformance_server)
if(VRAMSCOPE_FUZZ)  # the harnesses, fuzz_<name>
  get_property(fuzz_targets DIRECTORY ${CMAKE_SOURCE_DIR}/tests/fuzz PROPERTY BUILDSYSTEM_TARGETS)
  list(APPEND VS_PCH_USERS ${fuzz_targets})
endif()
foreach(target ${VS_PCH_USERS})
  if(TARGET ${target})
    get_target_property(type ${target} TYPE)
    if(type MATCHES "EXECUTABLE|LIBRARY")
      target_precompile_headers(${target} REUSE_FROM vs_pch)
    endif()
  endif()
endforeach()

if(TARGET vs_catch_main)
  find_package(Catch2 2 REQUIRED)  # its imported target is local to tests/
  add_library(vs_pch_tests OBJECT ${CMAKE_CURRENT_LIST_DIR}/pch.cpp)
  target_link_libraries(vs_pch_tests PRIVATE nlohmann_json::nlohmann_json spdlog::spdlog Catch2::Catch2)
  target_precompile_headers(vs_pch_tests PRIVATE ${VS_PCH_HEADERS} <filesystem> <catch2/catch.hpp>)
  # -pthread (it defines _REENTRANT) on all of them: tool_tests has it from librsvg's
  # pkg-config flags, and a PCH made without it is not used there (gcc) or refused (clang).
  foreach(target vs_pch_tests unit_tests tool_tests mcp_protocol_tests integration_tests)
    target_compile_options(${target} PRIVATE -pthread)
    if(NOT target STREQUAL vs_pch_tests)
      target_precompile_headers(${target} REUSE_FROM vs_pch_tests)
    endif()
  endforeach()
  # main() of the integration tests: CATCH_CONFIG_RUNNER before catch.hpp.
  set_source_files_properties(${CMAKE_SOURCE_DIR}/tests/integration/main.cpp
                              DIRECTORY ${CMAKE_SOURCE_DIR}/tests/integration PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
endif()
