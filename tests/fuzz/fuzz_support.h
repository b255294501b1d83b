// What the libFuzzer harnesses share: the shipped traces, vramscope's MCP
// registry over one of them, and a failure that libFuzzer reports as a crash.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "server/registry.h"

namespace vs::fuzz {

// Every recorded trace shipped in the repository, sorted: examples/traces/*/trace.db,
// then examples/corpus/traces/**.db (VS_EXAMPLES_DIR is set by tests/fuzz/CMakeLists.txt).
const std::vector<std::string>& shipped_traces();

// The registry `vramscope mcp --db PATH` serves: every tool of tools::catalog(), the
// prompts with their completions, the resources and the session template. It mirrors
// build_registry() of src/mcp_command.cpp (private to that file), through the same
// public functions of tools/.
mcp::Registry vramscope_registry(const std::string& db_path);

// Sends spdlog's output nowhere, at the trace level: every log line is still
// formatted (a bad format argument still fails) but the fuzzer's output stays readable.
void quiet_logs();

// Prints what went wrong and aborts: libFuzzer saves the input as a crash.
[[noreturn]] void fail(std::string_view what, std::string_view detail = {});

}  // namespace vs::fuzz
