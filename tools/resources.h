// The resources an agent can read (MCP resources/list, resources/templates/list,
// resources/read): the schema documentation, the list of sessions, and one
// session's overview. Passive structs, no MCP types: the server's glue maps them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/reader.h"

namespace vs::tools {

struct ResourceSpec {
  std::string uri;
  std::string name;
  std::string title;
  std::string description;
  std::string mime_type;
};

struct ResourceTemplateSpec {
  std::string uri_template;  // RFC 6570, e.g. "vramscope://session/{id}"
  std::string name;
  std::string title;
  std::string description;
  std::string mime_type;
};

struct ResourceContent {
  std::string uri;
  std::string mime_type;
  std::string text;
};

// vramscope://schema and vramscope://sessions.
const std::vector<ResourceSpec>& resources();
// vramscope://session/{id} (its `id` completes with complete_argument(db, "id", ...)).
const std::vector<ResourceTemplateSpec>& resource_templates();
// The template's concrete resources, one per session, newest first (at most kMaxSessionResources).
constexpr std::size_t kMaxSessionResources = 100;
Result<std::vector<ResourceSpec>> session_resources(const store::TraceReader& db);

// The content at `uri`; an Error says what exists (the server answers it as "resource not found").
Result<ResourceContent> read_resource(const store::TraceReader& db, std::string_view uri);

}  // namespace vs::tools
