#include "live/trace_dir.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "common/untrusted_text.h"
#include "store/reader.h"

namespace vs::live {
namespace {

namespace fs = std::filesystem;

// True while a recorder holds the file's exclusive flock() (store::TraceWriter::open).
bool recorder_holds(const std::string& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);  // drops the shared lock, if taken
  return held;
}

std::vector<std::string> trace_files(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec) && e.path().extension() == ".db") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.size() > TraceDir::kMaxFiles) {
    spdlog::warn("{}: {} trace files, only the first {} (by name) are served", escape_untrusted(dir, 400), files.size(),
                 TraceDir::kMaxFiles);
    files.resize(TraceDir::kMaxFiles);
  }
  return files;
}

}  // namespace

Result<TraceDir> TraceDir::open(const std::string& path) {
  if (path.empty()) return Error{"--trace-dir: empty path"};
  std::error_code ec;
  const fs::path dir = fs::absolute(path, ec);
  if (ec) return Error{"--trace-dir " + path + ": " + ec.message()};
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) return Error{"--trace-dir " + dir.string() + ": cannot create it: " + ec.message()};
    if (chmod(dir.c_str(), 0700) != 0)
      return Error{"--trace-dir " + dir.string() + ": chmod 0700: " + std::strerror(errno)};
  }
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0) return Error{"--trace-dir " + dir.string() + ": " + std::strerror(errno)};
  if (!S_ISDIR(st.st_mode)) return Error{"--trace-dir " + dir.string() + ": not a directory"};
  if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return Error{"--trace-dir " + dir.string() +
                 ": must be owned by root and writable by root only (chown root " + dir.string() + "; chmod 0700 " +
                 dir.string() + "): a file another user planted there would be served as a trace"};
  return TraceDir(dir.string());
}

std::vector<SessionEntry> TraceDir::sessions() const {
  std::map<std::int64_t, SessionEntry> by_id;
  for (const auto& file : trace_files(path_)) {
    auto reader = store::TraceReader::open(file);
    if (!reader) {
      // A file being created right now has no schema yet; anything else is worth a line.
      spdlog::debug("{}: not read as a trace: {}", escape_untrusted(file, 400), escape_untrusted(reader.error().message, 400));
      continue;
    }
    (void)(*reader)->query("SELECT id, status, start_ts_ns FROM sessions ORDER BY id", {}, [&](const store::Row& r) {
      SessionEntry e{r.i64(0), file, r.text(1), r.i64(2)};
      auto [it, added] = by_id.emplace(e.id, e);
      if (!added)
        spdlog::warn("{}: session {} left out: {} has a session with that id", escape_untrusted(file, 400), e.id,
                     escape_untrusted(it->second.file, 400));
    });
  }
  std::vector<SessionEntry> out;
  for (auto& [id, e] : by_id) out.push_back(std::move(e));
  return out;
}

std::optional<SessionEntry> TraceDir::find(std::int64_t session_id) const {
  for (auto& e : sessions())
    if (e.id == session_id) return e;
  return std::nullopt;
}

std::string TraceDir::file_for_new_session() const {
  for (int n = 1;; ++n) {
    const std::string file = path_ + (n == 1 ? "/traces.db" : "/traces-" + std::to_string(n) + ".db");
    if (!fs::exists(file) || !recorder_holds(file)) return file;
  }
}

}  // namespace vs::live
