// The directory where `vramscope mcp --allow-trace` keeps the traces it records
// (--trace-dir, default /var/lib/vramscope/traces): never a path a client
// chooses. Its trace files (*.db) are the server's sessions, numbered with ids
// unique across the directory, so that a session id alone names a trace.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace vs::live {

struct SessionEntry {
  std::int64_t id = 0;
  std::string file;    // the trace file that holds it
  std::string status;  // recording | complete | interrupted, as a reader sees it
  std::int64_t start_ts_ns = 0;
};

class TraceDir {
 public:
  // At most this many trace files are read (in name order); more are logged and left out.
  static constexpr std::size_t kMaxFiles = 256;

  // Creates `path` (mode 0700, parents too) when it is missing. Refuses a path that is
  // not a directory, or one that a user other than root can write: a trace file
  // planted there would be read as one of ours.
  static Result<TraceDir> open(const std::string& path);
  const std::string& path() const { return path_; }

  // Every session of the directory's trace files, by id. A session whose id another
  // file already holds (a file copied in from elsewhere) is left out and logged.
  std::vector<SessionEntry> sessions() const;
  std::optional<SessionEntry> find(std::int64_t session_id) const;
  // The file for a new session: the first of traces.db, traces-2.db, ... that no
  // recorder holds now (sequential traces share a file, so compare_sessions sees them
  // together; concurrent ones each get their own).
  std::string file_for_new_session() const;

 private:
  explicit TraceDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace vs::live
