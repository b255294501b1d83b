// What a server offers: tools, prompts, resources and resource templates,
// each with its handler. The registry is filled once before the server starts
// and is read-only afterwards, so handlers run concurrently without locks.
// Resources that come and go while the server runs (one per live trace) come
// from a ResourceLister instead.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "server/protocol.h"

namespace vs::mcp {

class RequestContext;  // server/server.h: per call cancellation, progress, logging, client requests

// Returns a CallToolResult ({"content": [...], "structuredContent"?, "isError"?}).
// An Error becomes a result with isError and the message as its text: the
// model reads it, so it should say what to change.
using ToolHandler = std::function<Result<json>(const json& arguments, RequestContext& context)>;

// Returns a GetPromptResult ({"description"?, "messages": [...]}). An Error
// becomes -32602 (the arguments were wrong).
using PromptHandler = std::function<Result<json>(const json& arguments, RequestContext& context)>;

// Returns the `contents` array of a ReadResourceResult. An Error means there
// is no such resource (-32002); its message says why.
using ResourceReader = std::function<Result<json>(const std::string& uri, RequestContext& context)>;
using TemplateReader = std::function<Result<json>(const std::string& uri,
                                                  const std::map<std::string, std::string>& variables,
                                                  RequestContext& context)>;

// Every value the argument may take; the server keeps those that start with
// what the user typed, and pages them. `context_arguments` holds the values of
// the other arguments already chosen (completion/complete's context).
using Completer = std::function<std::vector<std::string>(const json& context_arguments)>;

struct Tool {
  std::string name;
  std::string title;
  std::string description;
  json input_schema = {{"type", "object"}};
  json output_schema = nullptr;  // optional
  json annotations = nullptr;    // optional, e.g. {"readOnlyHint": true}
  ToolHandler handler;
};

struct PromptArgument {
  std::string name;
  std::string title;
  std::string description;
  bool required = false;
  Completer complete;  // optional
};

struct Prompt {
  std::string name;
  std::string title;
  std::string description;
  std::vector<PromptArgument> arguments;
  PromptHandler handler;
};

struct Resource {
  std::string uri;
  std::string name;
  std::string title;
  std::string description;
  std::string mime_type;
  ResourceReader reader;  // may be empty for a listed (dynamic) resource that a template reads
};

// The resources that exist now besides the static ones, e.g. one per trace
// being recorded. Called on every resources/list, and on resources/read and
// resources/subscribe of a URI that is not static, from the transports' and
// workers' threads at once, with no server lock held: thread-safe, quick,
// and in a stable order (new ones last), since resources/list pages by
// position. Each is read by its own reader or, without one, by the first
// template matching its URI; one with neither, or with the URI of a static or
// earlier resource, is left out. Call Server::notify_resource_list_changed()
// when the list changes.
using ResourceLister = std::function<std::vector<Resource>()>;

// An RFC 6570 level-1 template: "{name}" stands for one or more characters
// other than '/', e.g. "vramscope://session/{id}" or "file:///{name}.json";
// two variables need a '/' between them.
struct ResourceTemplate {
  std::string uri_template;
  std::string name;
  std::string title;
  std::string description;
  std::string mime_type;
  TemplateReader reader;
  std::map<std::string, Completer> complete;  // per template variable, optional
};

class Registry {
 public:
  // Each fails on a duplicate or empty name/URI, a missing handler, or (for
  // tools) an input schema that is not an object schema.
  Status add(Tool tool);
  Status add(Prompt prompt);
  Status add(Resource resource);
  Status add(ResourceTemplate resource_template);
  // Makes the list of resources dynamic: resources/list gives the static
  // resources, then the lister's; the resources.listChanged capability
  // becomes true. Fails when `lister` is empty or one was already set.
  Status set_resource_lister(ResourceLister lister);

  const std::vector<Tool>& tools() const { return tools_; }
  const std::vector<Prompt>& prompts() const { return prompts_; }
  const std::vector<Resource>& resources() const { return resources_; }
  const std::vector<ResourceTemplate>& resource_templates() const { return templates_; }
  const ResourceLister& resource_lister() const { return lister_; }  // empty: none

  const Tool* find_tool(std::string_view name) const;
  const Prompt* find_prompt(std::string_view name) const;
  const Resource* find_resource(std::string_view uri) const;
  const ResourceTemplate* find_template(std::string_view uri_template) const;

  struct TemplateMatch {
    const ResourceTemplate* resource_template;
    std::map<std::string, std::string> variables;
  };
  // The first template that matches `uri`, in one pass over it whatever its
  // length (std::regex recursed once per character).
  std::optional<TemplateMatch> match_template(std::string_view uri) const;

 private:
  // A template as alternating parts: literal text, then a variable, then text...
  struct CompiledTemplate {
    std::vector<std::string> literals;   // literals[i] comes before variables[i]; one more than variables
    std::vector<std::string> variables;
  };
  std::vector<Tool> tools_;
  std::vector<Prompt> prompts_;
  std::vector<Resource> resources_;
  std::vector<ResourceTemplate> templates_;
  std::vector<CompiledTemplate> compiled_;  // parallel to templates_
  ResourceLister lister_;
};

// CallToolResult builders for handlers.
json text_result(std::string text);
json tool_error_result(std::string message);

// For a handler that checks its arguments against its input schema (with
// common/json_schema.h): nullopt when they are valid, otherwise the Error to
// return, naming the argument and what is wrong with it.
std::optional<Error> check_arguments(const json& input_schema, const json& arguments);

}  // namespace vs::mcp
