// The stdio transport: one JSON-RPC message per line on `in`, one per line on
// `out`, nothing else on `out` (logs go to stderr). Each line is dispatched
// as it arrives, so a ping is answered while a tool runs. A line longer than
// the server's limits.max_message_bytes is answered -32600 and dropped
// without being held in memory.
#pragma once

#include <istream>
#include <ostream>

#include "common/result.h"
#include "server/server.h"

namespace vs::mcp {

// Returns at end of input, after cancelling the requests still running and
// waiting for them to stop; fails when `out` can no longer be written.
Status run_stdio(Server& server, std::istream& in, std::ostream& out);

}  // namespace vs::mcp
