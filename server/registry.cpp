#include "server/registry.h"

#include <algorithm>

#include "common/json_schema.h"

namespace vs::mcp {

namespace {

template <class Item, class Key>
const Item* find_by(const std::vector<Item>& items, std::string Item::*field, Key key) {
  auto it = std::find_if(items.begin(), items.end(), [&](const Item& item) { return item.*field == key; });
  return it == items.end() ? nullptr : &*it;
}

}  // namespace

Status Registry::add(Tool tool) {
  if (tool.name.empty()) return Error{"tool without a name"};
  if (find_tool(tool.name)) return Error{"tool '" + tool.name + "' registered twice"};
  if (!tool.handler) return Error{"tool '" + tool.name + "' has no handler"};
  if (!tool.input_schema.is_object() || tool.input_schema.value("type", "") != "object")
    return Error{"tool '" + tool.name + "': inputSchema must be a JSON Schema with \"type\": \"object\""};
  if (!tool.output_schema.is_null() &&
      (!tool.output_schema.is_object() || tool.output_schema.value("type", "") != "object"))
    return Error{"tool '" + tool.name + "': outputSchema must be a JSON Schema with \"type\": \"object\""};
  tools_.push_back(std::move(tool));
  return {};
}

Status Registry::add(Prompt prompt) {
  if (prompt.name.empty()) return Error{"prompt without a name"};
  if (find_prompt(prompt.name)) return Error{"prompt '" + prompt.name + "' registered twice"};
  if (!prompt.handler) return Error{"prompt '" + prompt.name + "' has no handler"};
  prompts_.push_back(std::move(prompt));
  return {};
}

Status Registry::add(Resource resource) {
  if (resource.uri.empty() || resource.name.empty()) return Error{"resource needs a uri and a name"};
  if (find_resource(resource.uri)) return Error{"resource '" + resource.uri + "' registered twice"};
  if (!resource.reader) return Error{"resource '" + resource.uri + "' has no reader"};
  resources_.push_back(std::move(resource));
  return {};
}

Status Registry::add(ResourceTemplate resource_template) {
  const std::string& text = resource_template.uri_template;
  if (text.empty() || resource_template.name.empty()) return Error{"resource template needs a uriTemplate and a name"};
  if (find_template(text)) return Error{"resource template '" + text + "' registered twice"};
  if (!resource_template.reader) return Error{"resource template '" + text + "' has no reader"};
  CompiledTemplate compiled;
  size_t pos = 0;
  for (size_t open; (open = text.find('{', pos)) != std::string::npos;) {
    size_t close = text.find('}', open);
    if (close == std::string::npos || close == open + 1)
      return Error{"resource template '" + text + "': unterminated or empty {variable}"};
    std::string literal = text.substr(pos, open - pos);
    if (!compiled.variables.empty() && literal.find('/') == std::string::npos)
      return Error{"resource template '" + text + "': two variables without a '/' between them are ambiguous"};
    compiled.literals.push_back(std::move(literal));
    compiled.variables.push_back(text.substr(open + 1, close - open - 1));
    pos = close + 1;
  }
  compiled.literals.push_back(text.substr(pos));
  for (const auto& [variable, completer] : resource_template.complete)
    if (std::find(compiled.variables.begin(), compiled.variables.end(), variable) == compiled.variables.end())
      return Error{"resource template '" + text + "': completion for unknown variable '" + variable + "'"};
  templates_.push_back(std::move(resource_template));
  compiled_.push_back(std::move(compiled));
  return {};
}

Status Registry::set_resource_lister(ResourceLister lister) {
  if (!lister) return Error{"resource lister is empty"};
  if (lister_) return Error{"resource lister set twice"};
  lister_ = std::move(lister);
  return {};
}

const Tool* Registry::find_tool(std::string_view name) const { return find_by(tools_, &Tool::name, name); }
const Prompt* Registry::find_prompt(std::string_view name) const { return find_by(prompts_, &Prompt::name, name); }
const Resource* Registry::find_resource(std::string_view uri) const { return find_by(resources_, &Resource::uri, uri); }
const ResourceTemplate* Registry::find_template(std::string_view uri_template) const {
  return find_by(templates_, &ResourceTemplate::uri_template, uri_template);
}

namespace {

// Matches `uri` against literal, variable, literal, ...: a variable takes the
// rest of its path segment but for the text that follows it there (a '/'
// separates it from the next variable), so there is nothing to backtrack.
std::optional<std::vector<std::string>> match_parts(std::string_view uri, const std::vector<std::string>& literals) {
  std::vector<std::string> values;
  if (!uri.starts_with(literals[0])) return std::nullopt;
  size_t pos = literals[0].size();
  for (size_t i = 1; i < literals.size(); ++i) {
    const std::string_view after = literals[i];
    const std::string_view rest_of_segment = after.substr(0, after.find('/'));
    const size_t segment_end = std::min(uri.find('/', pos), uri.size());
    if (segment_end < pos + 1 + rest_of_segment.size()) return std::nullopt;
    const size_t value_end = segment_end - rest_of_segment.size();
    if (uri.substr(value_end).substr(0, after.size()) != after) return std::nullopt;
    values.emplace_back(uri.substr(pos, value_end - pos));
    pos = value_end + after.size();
  }
  if (pos != uri.size()) return std::nullopt;
  return values;
}

}  // namespace

std::optional<Registry::TemplateMatch> Registry::match_template(std::string_view uri) const {
  for (size_t i = 0; i < templates_.size(); ++i) {
    auto values = match_parts(uri, compiled_[i].literals);
    if (!values) continue;
    TemplateMatch result{&templates_[i], {}};
    for (size_t v = 0; v < values->size(); ++v) result.variables[compiled_[i].variables[v]] = std::move((*values)[v]);
    return result;
  }
  return std::nullopt;
}

json text_result(std::string text) {
  return {{"content", json::array({{{"type", "text"}, {"text", std::move(text)}}})}};
}

json tool_error_result(std::string message) {
  json result = text_result(std::move(message));
  result["isError"] = true;
  return result;
}

std::optional<Error> check_arguments(const json& input_schema, const json& arguments) {
  auto violation = json_schema::validate(input_schema, arguments);
  if (!violation) return std::nullopt;
  return Error{"invalid arguments: " + *violation + ". Fix the argument and call the tool again."};
}

}  // namespace vs::mcp
