// The GPU traces recorded on an H100 (examples/traces/<name>/trace.db) are
// linked into the binary, so that `vramscope mcp --demo` and `vramscope report
// --demo` work on a machine without a GPU and without the source tree.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace vs::demo {

// The names of the embedded traces: empty_cache, leak, expandable, ...
std::vector<std::string_view> names();

// Writes the named trace to a private file (once per content, under
// $XDG_RUNTIME_DIR or /tmp) and returns its path, for read-only opening.
// An Error lists the names there are.
Result<std::string> materialize(std::string_view name);

}  // namespace vs::demo
