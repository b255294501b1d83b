// The stdio transport: one JSON-RPC message per line on `in`, one per line on
// `out`, nothing else on `out` (logs go to stderr). Each line is dispatched
// as it arrives, so a ping is answered while a tool runs. A line longer than
// the server's limits.max_message_bytes is answered -32600 and dropped
// without being held in memory.
#pragma once

#include <array>
#include <atomic>
#include <istream>
#include <ostream>
#include <streambuf>

#include "common/result.h"
#include "server/server.h"

namespace vs::mcp {

// Returns at end of input once the requests still running are answered (or,
// when `out` can no longer be written, cancelled); fails when `out` failed.
Status run_stdio(Server& server, std::istream& in, std::ostream& out);

// A file descriptor (stdin) as the input of run_stdio, whose input also ends
// once stop() is called from another thread (on a stop signal): a thread
// blocked in read() cannot otherwise be woken, and a server killed by the
// signal would leave its traces unended.
class StoppableInput : public std::streambuf {
 public:
  explicit StoppableInput(int fd);
  ~StoppableInput() override;
  StoppableInput(const StoppableInput&) = delete;
  StoppableInput& operator=(const StoppableInput&) = delete;
  void stop();

 protected:
  int_type underflow() override;

 private:
  int fd_;
  int wake_[2] = {-1, -1};  // stop() writes to wake_[1]; underflow() polls wake_[0] beside fd_
  std::atomic<bool> stopped_{false};
  std::array<char, 1 << 16> buffer_{};
};

}  // namespace vs::mcp
