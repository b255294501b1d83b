#include "server/stdio.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <mutex>
#include <string>

namespace vs::mcp {

namespace {

// All writers to `out` (the reading thread, workers) go through one lock so
// lines never interleave.
class LineWriter : public Outbound {
 public:
  explicit LineWriter(std::ostream& out) : out_(out) {}
  void send(const json& message) override { write(to_wire(message)); }
  void write(const std::string& line) {
    std::lock_guard lock(mutex_);
    out_ << line << '\n';
    out_.flush();
    if (!out_) failed_ = true;
  }
  bool failed() const {
    std::lock_guard lock(mutex_);
    return failed_;
  }

 private:
  std::ostream& out_;
  mutable std::mutex mutex_;
  bool failed_ = false;
};

// One line's answers. Until the server says whether the line was a batch
// (Server::Received), responses wait; a batch's go out together as one array
// once all of them are in, any other response goes out as it comes.
class LineExchange : public Exchange {
 public:
  explicit LineExchange(std::shared_ptr<LineWriter> writer) : writer_(std::move(writer)) {}
  void send(const json& message) override { writer_->send(message); }
  void finish(const json&, std::optional<json> response) override {
    std::lock_guard lock(mutex_);
    ++finished_;
    if (response) waiting_.push_back(std::move(*response));
    flush();
  }
  void expect(const Server::Received& received) {
    std::lock_guard lock(mutex_);
    received_ = received;
    flush();
  }

 private:
  void flush() {
    if (!received_ || waiting_.empty()) return;
    if (!received_->batch) {
      for (const json& response : waiting_) writer_->send(response);
      waiting_ = json::array();
    } else if (finished_ == received_->requests) {
      writer_->send(waiting_);
      waiting_ = json::array();
    }
  }
  std::shared_ptr<LineWriter> writer_;
  std::mutex mutex_;
  json waiting_ = json::array();
  size_t finished_ = 0;
  std::optional<Server::Received> received_;
};

enum class LineRead { complete, too_long, end_of_input };

// Reads up to the next '\n' (or the end of input) into `line`, never holding
// more than `max_bytes` of it: a longer line is read to its end and dropped
// (std::getline would hold all of it, however long).
LineRead read_line(std::streambuf& input, std::string& line, size_t max_bytes) {
  line.clear();
  bool read_any = false;
  bool too_long = false;
  for (int c; (c = input.sbumpc()) != std::char_traits<char>::eof();) {
    read_any = true;
    if (c == '\n') break;
    if (too_long) continue;
    if (line.size() == max_bytes) {
      too_long = true;
      std::string().swap(line);
      continue;
    }
    line.push_back(static_cast<char>(c));
  }
  if (!read_any) return LineRead::end_of_input;
  return too_long ? LineRead::too_long : LineRead::complete;
}

}  // namespace

Status run_stdio(Server& server, std::istream& in, std::ostream& out) {
  auto writer = std::make_shared<LineWriter>(out);
  auto session = server.open_session(writer);
  const MessageLimits& limits = server.options().limits;
  std::string line;
  for (LineRead read; (read = read_line(*in.rdbuf(), line, limits.max_message_bytes)) != LineRead::end_of_input;) {
    if (read == LineRead::complete && line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto exchange = std::make_shared<LineExchange>(writer);
    Server::Received received = read == LineRead::too_long ? Server::refuse(oversized_message(limits), exchange)
                                                           : server.receive_text(session, line, exchange);
    exchange->expect(received);
    if (writer->failed()) break;
  }
  // End of input: what was asked is still answered (`printf ... | vramscope
  // mcp` works), unless stdout is gone too.
  const bool output_gone = writer->failed();
  spdlog::debug("mcp: stdin closed; {} {} running request(s)", output_gone ? "cancelling" : "finishing",
                session->in_flight());
  server.close_session(*session,
                       output_gone ? Server::RunningRequests::cancel : Server::RunningRequests::finish);
  session->wait_idle();
  if (writer->failed()) return Error{"mcp stdio: writing to stdout failed (the client went away?)"};
  return {};
}

StoppableInput::StoppableInput(int fd) : fd_(fd) {
  // Without the pipe (out of descriptors) stop() cannot wake a blocked read; the input still works.
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
}

StoppableInput::~StoppableInput() {
  for (int fd : wake_)
    if (fd >= 0) ::close(fd);
}

void StoppableInput::stop() {
  stopped_ = true;
  if (wake_[1] >= 0) {
    const char byte = 1;
    [[maybe_unused]] ssize_t ignored = ::write(wake_[1], &byte, 1);
  }
}

StoppableInput::int_type StoppableInput::underflow() {
  if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
  for (;;) {
    if (stopped_) return traits_type::eof();
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, wake_[0] >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return traits_type::eof();
    }
    if (stopped_) return traits_type::eof();
    ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return traits_type::eof();
    setg(buffer_.data(), buffer_.data(), buffer_.data() + n);
    return traits_type::to_int_type(*gptr());
  }
}

}  // namespace vs::mcp
