// The prompts a user can pick to start an investigation (MCP prompts/list and
// prompts/get), and completions of their arguments (MCP completion/complete).
// Passive structs, no MCP types: the server's glue maps them to the protocol.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/reader.h"

namespace vs::tools {

struct PromptArgument {
  std::string name;
  std::string description;
  bool required = false;
};

struct PromptSpec {
  std::string name;
  std::string title;
  std::string description;
  std::vector<PromptArgument> arguments;
};

struct PromptMessage {
  std::string role;  // "user" | "assistant"
  std::string text;
};

// investigate, leak_hunt, slow_free.
const std::vector<PromptSpec>& prompts();

// The tools a prompt's workflow tells the agent to call, in order (each one is in catalog()).
std::vector<std::string_view> prompt_tools(std::string_view prompt);

// The messages of a prompt. Arguments come as strings (as MCP sends them):
// session_id and pid, both optional. An Error says which argument is wrong and
// what exists (an unknown prompt, not an integer, no such session or pid).
Result<std::vector<PromptMessage>> get_prompt(const store::TraceReader& db, std::string_view name,
                                              const std::map<std::string, std::string>& arguments);

constexpr std::size_t kMaxCompletions = 100;  // MCP's limit per completion result

struct Completion {
  std::vector<std::string> values;  // at most kMaxCompletions, best first
  std::size_t total = 0;            // how many matched
  bool has_more = false;
};

// Values for argument `argument` that start with `partial`: "session_id" (and
// the session template's "id"): session ids, newest first; "pid": the pids of
// the session in context["session_id"] (default: every session). Any other
// argument has no completions.
Result<Completion> complete_argument(const store::TraceReader& db, std::string_view argument, std::string_view partial,
                                     const std::map<std::string, std::string>& context);

}  // namespace vs::tools
