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

std::string regex_escape(std::string_view literal) {
  static const std::string special = R"(\^$.|?*+()[]{}/)";
  std::string out;
  for (char c : literal) {
    if (special.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
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
  std::string pattern;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t open = text.find('{', pos);
    if (open == std::string::npos) {
      pattern += regex_escape(std::string_view(text).substr(pos));
      break;
    }
    size_t close = text.find('}', open);
    if (close == std::string::npos || close == open + 1)
      return Error{"resource template '" + text + "': unterminated or empty {variable}"};
    pattern += regex_escape(std::string_view(text).substr(pos, open - pos));
    pattern += "([^/]+)";
    compiled.variables.push_back(text.substr(open + 1, close - open - 1));
    pos = close + 1;
  }
  for (const auto& [variable, completer] : resource_template.complete)
    if (std::find(compiled.variables.begin(), compiled.variables.end(), variable) == compiled.variables.end())
      return Error{"resource template '" + text + "': completion for unknown variable '" + variable + "'"};
  compiled.pattern = std::regex(pattern);
  templates_.push_back(std::move(resource_template));
  compiled_.push_back(std::move(compiled));
  return {};
}

const Tool* Registry::find_tool(std::string_view name) const { return find_by(tools_, &Tool::name, name); }
const Prompt* Registry::find_prompt(std::string_view name) const { return find_by(prompts_, &Prompt::name, name); }
const Resource* Registry::find_resource(std::string_view uri) const { return find_by(resources_, &Resource::uri, uri); }
const ResourceTemplate* Registry::find_template(std::string_view uri_template) const {
  return find_by(templates_, &ResourceTemplate::uri_template, uri_template);
}

std::optional<Registry::TemplateMatch> Registry::match_template(const std::string& uri) const {
  for (size_t i = 0; i < templates_.size(); ++i) {
    std::smatch match;
    if (!std::regex_match(uri, match, compiled_[i].pattern)) continue;
    TemplateMatch result{&templates_[i], {}};
    for (size_t v = 0; v < compiled_[i].variables.size(); ++v)
      result.variables[compiled_[i].variables[v]] = match[v + 1].str();
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
