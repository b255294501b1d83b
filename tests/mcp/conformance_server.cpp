// The fixture server of the official MCP conformance suite
// (@modelcontextprotocol/conformance): the tools, resources and prompts its
// server scenarios call, with the names and behaviour they check, built on
// vs_server like `vramscope mcp`.
//
//   mcp_conformance_server http [--sse-responses] [PORT]
//       prints "listening on URL", serves until SIGINT/SIGTERM; --sse-responses
//       answers every request with an SSE stream (HttpOptions::sse_responses)
//   mcp_conformance_server stdio
//       serves stdin/stdout until EOF
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "server/http.h"
#include "server/stdio.h"

namespace {

using namespace vs::mcp;
using vs::Result;
using namespace std::chrono_literals;

// A 1x1 red PNG and a minimal WAV, base64.
constexpr const char* test_png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
constexpr const char* test_wav = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

json image(const char* data) { return {{"type", "image"}, {"data", data}, {"mimeType", "image/png"}}; }
json text(const std::string& value) { return {{"type", "text"}, {"text", value}}; }
json content(json items) { return {{"content", std::move(items)}}; }

json string_argument(const char* name, const char* description) {
  return {{"type", "object"},
          {"properties", {{name, {{"type", "string"}, {"description", description}}}}},
          {"required", {name}}};
}

// Elicits `schema` and reports what the client answered.
Result<json> elicit(RequestContext& context, const std::string& message, json schema, const char* prefix) {
  auto answer = context.request_client("elicitation/create",
                                       {{"mode", "form"}, {"message", message}, {"requestedSchema", std::move(schema)}});
  if (!answer) return answer.error();
  return text_result(std::string(prefix) + "action=" + answer->value("action", "?") +
                     ", content=" + answer->value("content", json::object()).dump());
}

void add_or_die(Registry& registry, auto item) {
  if (auto status = registry.add(std::move(item)); !status) {
    spdlog::critical("fixture registration: {}", status.message());
    std::exit(2);
  }
}

void add_tools(Registry& r) {
  auto simple = [](const char* name, const char* description, json result) {
    return Tool{name, "", description, {{"type", "object"}}, nullptr, {{"readOnlyHint", true}},
                [result](const json&, RequestContext&) -> Result<json> { return result; }};
  };
  add_or_die(r, simple("test_simple_text", "Tests simple text content response",
                       text_result("This is a simple text response for testing.")));
  // json::array: a braced list of one json value is that value under clang, an array of it under gcc.
  add_or_die(r, simple("test_image_content", "Tests image content response",
                       content(json::array({image(test_png)}))));
  add_or_die(r, simple("test_audio_content", "Tests audio content response",
                       content({{{"type", "audio"}, {"data", test_wav}, {"mimeType", "audio/wav"}}})));
  add_or_die(r, simple("test_embedded_resource", "Tests embedded resource content response",
                       content({{{"type", "resource"},
                                 {"resource",
                                  {{"uri", "test://embedded-resource"},
                                   {"mimeType", "text/plain"},
                                   {"text", "This is an embedded resource content."}}}}})));
  add_or_die(r, simple("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)",
                       content({text("Multiple content types test:"), image(test_png),
                                {{"type", "resource"},
                                 {"resource",
                                  {{"uri", "test://mixed-content-resource"},
                                   {"mimeType", "application/json"},
                                   {"text", R"({"test":"data","value":123})"}}}}})));
  add_or_die(r, Tool{"test_tool_with_logging", "", "Tests tool that emits log messages during execution",
                     {{"type", "object"}}, nullptr, nullptr,
                     [](const json&, RequestContext& context) -> Result<json> {
                       context.log(LogLevel::info, "Tool execution started");
                       std::this_thread::sleep_for(50ms);
                       context.log(LogLevel::info, "Tool processing data");
                       std::this_thread::sleep_for(50ms);
                       context.log(LogLevel::info, "Tool execution completed");
                       return text_result("Tool with logging executed successfully");
                     }});
  add_or_die(r, Tool{"test_tool_with_progress", "", "Tests tool that reports progress notifications",
                     {{"type", "object"}}, nullptr, nullptr,
                     [](const json&, RequestContext& context) -> Result<json> {
                       for (int step : {0, 50, 100}) {
                         if (step) std::this_thread::sleep_for(50ms);
                         context.progress(step, 100, "Completed step " + std::to_string(step) + " of 100");
                       }
                       return text_result("Progress reported");
                     }});
  add_or_die(r, Tool{"test_error_handling", "", "Tests error response handling", {{"type", "object"}}, nullptr, nullptr,
                     [](const json&, RequestContext&) -> Result<json> {
                       return vs::Error{"This tool intentionally returns an error for testing"};
                     }});
  add_or_die(r, Tool{"test_reconnection", "",
                     "Tests SSE stream disconnection and client reconnection (SEP-1699): the server closes the stream "
                     "mid-call and sends the result after the client reconnects.",
                     {{"type", "object"}}, nullptr, nullptr,
                     [](const json&, RequestContext& context) -> Result<json> {
                       context.close_stream();
                       std::this_thread::sleep_for(100ms);
                       return text_result(
                           "Reconnection test completed successfully. If you received this, the client properly "
                           "reconnected after stream closure.");
                     }});
  add_or_die(r, Tool{"test_sampling", "", "Tests server-initiated sampling (LLM completion request)",
                     string_argument("prompt", "The prompt to send to the LLM"), nullptr, nullptr,
                     [](const json& args, RequestContext& context) -> Result<json> {
                       if (auto invalid = check_arguments(string_argument("prompt", ""), args)) return *invalid;
                       auto answer = context.request_client(
                           "sampling/createMessage",
                           {{"messages", {{{"role", "user"}, {"content", text(args["prompt"])}}}}, {"maxTokens", 100}});
                       if (!answer) return answer.error();
                       return text_result("LLM response: " + answer->value("/content/text"_json_pointer, std::string("")));
                     }});
  add_or_die(r, Tool{"test_elicitation", "", "Tests server-initiated elicitation (user input request)",
                     string_argument("message", "The message to show the user"), nullptr, nullptr,
                     [](const json& args, RequestContext& context) -> Result<json> {
                       if (auto invalid = check_arguments(string_argument("message", ""), args)) return *invalid;
                       return elicit(context, args["message"],
                                     {{"type", "object"},
                                      {"properties",
                                       {{"username", {{"type", "string"}, {"description", "User's response"}}},
                                        {"email", {{"type", "string"}, {"description", "User's email address"}}}}},
                                      {"required", {"username", "email"}}},
                                     "User response: ");
                     }});
  add_or_die(r, Tool{"test_elicitation_sep1034_defaults", "", "Tests elicitation with default values per SEP-1034",
                     {{"type", "object"}}, nullptr, nullptr,
                     [](const json&, RequestContext& context) -> Result<json> {
                       json properties = {
                           {"name", {{"type", "string"}, {"description", "User name"}, {"default", "John Doe"}}},
                           {"age", {{"type", "integer"}, {"description", "User age"}, {"default", 30}}},
                           {"score", {{"type", "number"}, {"description", "User score"}, {"default", 95.5}}},
                           {"status",
                            {{"type", "string"},
                             {"description", "User status"},
                             {"enum", {"active", "inactive", "pending"}},
                             {"default", "active"}}},
                           {"verified", {{"type", "boolean"}, {"description", "Verification status"}, {"default", true}}}};
                       return elicit(context, "Please review and update the form fields with defaults",
                                     {{"type", "object"}, {"properties", properties}, {"required", json::array()}},
                                     "Elicitation completed: ");
                     }});
  add_or_die(r, Tool{"test_elicitation_sep1330_enums", "", "Tests elicitation with enum schema improvements per SEP-1330",
                     {{"type", "object"}}, nullptr, nullptr,
                     [](const json&, RequestContext& context) -> Result<json> {
                       auto titled = [](const char* prefix, const char* word) {
                         json options = json::array();
                         const char* ordinals[] = {"First", "Second", "Third"};
                         for (int i = 0; i < 3; ++i)
                           options.push_back({{"const", std::string(prefix) + std::to_string(i + 1)},
                                              {"title", std::string(ordinals[i]) + " " + word}});
                         return options;
                       };
                       json options = {"option1", "option2", "option3"};
                       json properties = {
                           {"untitledSingle", {{"type", "string"}, {"description", "Select one option"}, {"enum", options}}},
                           {"titledSingle",
                            {{"type", "string"}, {"description", "Select one option with titles"}, {"oneOf", titled("value", "Option")}}},
                           {"legacyEnum",
                            {{"type", "string"},
                             {"description", "Select one option (legacy)"},
                             {"enum", {"opt1", "opt2", "opt3"}},
                             {"enumNames", {"Option One", "Option Two", "Option Three"}}}},
                           {"untitledMulti",
                            {{"type", "array"},
                             {"description", "Select multiple options"},
                             {"minItems", 1},
                             {"maxItems", 3},
                             {"items", {{"type", "string"}, {"enum", options}}}}},
                           {"titledMulti",
                            {{"type", "array"},
                             {"description", "Select multiple options with titles"},
                             {"minItems", 1},
                             {"maxItems", 3},
                             {"items", {{"anyOf", titled("value", "Choice")}}}}}};
                       return elicit(context, "Please select options from the enum fields",
                                     {{"type", "object"}, {"properties", properties}, {"required", json::array()}},
                                     "Elicitation completed: ");
                     }});
  // The suite's own schema: 2020-12 keywords a server must pass through
  // untouched (SEP-1613: $schema, $defs, additionalProperties; SEP-2106:
  // allOf/anyOf, if/then/else, $anchor).
  json schema_2020_12 = R"({
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                          "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"},
                   "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                   "phone": {"type": "string"}, "email": {"type": "string"}},
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": false})"_json;
  add_or_die(r, Tool{"json_schema_2020_12_tool", "", "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613, SEP-2106)",
                     schema_2020_12, nullptr, nullptr,
                     [schema_2020_12](const json& args, RequestContext&) -> Result<json> {
                       if (auto invalid = check_arguments(schema_2020_12, args)) return *invalid;
                       return text_result("JSON Schema 2020-12 tool called with: " + args.dump());
                     }});
}

void add_resources(Registry& r) {
  auto fixed = [](const char* uri, const char* name, const char* title, const char* description, const char* mime,
                  json content) {
    return Resource{uri, name, title, description, mime,
                    [content, uri, mime](const std::string&, RequestContext&) -> Result<json> {
                      json item = {{"uri", uri}, {"mimeType", mime}};
                      item.update(content);
                      return json::array({item});
                    }};
  };
  add_or_die(r, fixed("test://static-text", "static-text", "Static Text Resource", "A static text resource for testing",
                      "text/plain", {{"text", "This is the content of the static text resource."}}));
  add_or_die(r, fixed("test://static-binary", "static-binary", "Static Binary Resource",
                      "A static binary resource (image) for testing", "image/png", {{"blob", test_png}}));
  add_or_die(r, fixed("test://watched-resource", "watched-resource", "Watched Resource",
                      "A resource clients may subscribe to", "text/plain", {{"text", "Watched resource content"}}));
  add_or_die(r, ResourceTemplate{"test://template/{id}/data", "template", "Resource Template",
                                 "A resource template with parameter substitution", "application/json",
                                 [](const std::string& uri, const std::map<std::string, std::string>& variables,
                                    RequestContext&) -> Result<json> {
                                   const std::string& id = variables.at("id");
                                   json data = {{"id", id}, {"templateTest", true}, {"data", "Data for ID: " + id}};
                                   return json::array({{{"uri", uri}, {"mimeType", "application/json"}, {"text", data.dump()}}});
                                 },
                                 {{"id", [](const json&) { return std::vector<std::string>{"1", "2", "123"}; }}}});
}

void add_prompts(Registry& r) {
  auto user = [](json content) { return json{{"role", "user"}, {"content", std::move(content)}}; };
  add_or_die(r, Prompt{"test_simple_prompt", "Simple Test Prompt", "A simple prompt without arguments", {},
                       [user](const json&, RequestContext&) -> Result<json> {
                         return json{{"messages", {user(text("This is a simple prompt for testing."))}}};
                       }});
  auto words = [](const json&) { return std::vector<std::string>{"paris", "park", "party", "test", "testing"}; };
  add_or_die(r, Prompt{"test_prompt_with_arguments", "Prompt With Arguments", "A prompt with required arguments",
                       {{"arg1", "", "First test argument", true, words}, {"arg2", "", "Second test argument", true, words}},
                       [user](const json& args, RequestContext&) -> Result<json> {
                         return json{{"messages", {user(text("Prompt with arguments: arg1='" + args.value("arg1", "") +
                                                             "', arg2='" + args.value("arg2", "") + "'"))}}};
                       }});
  add_or_die(r, Prompt{"test_prompt_with_embedded_resource", "Prompt With Embedded Resource",
                       "A prompt that includes an embedded resource",
                       {{"resourceUri", "", "URI of the resource to embed", true, nullptr}},
                       [user](const json& args, RequestContext&) -> Result<json> {
                         json resource = {{"uri", args.value("resourceUri", "")},
                                          {"mimeType", "text/plain"},
                                          {"text", "Embedded resource content for testing."}};
                         return json{{"messages",
                                      {user({{"type", "resource"}, {"resource", resource}}),
                                       user(text("Please process the embedded resource above."))}}};
                       }});
  add_or_die(r, Prompt{"test_prompt_with_image", "Prompt With Image", "A prompt that includes image content", {},
                       [user](const json&, RequestContext&) -> Result<json> {
                         return json{{"messages", {user(image(test_png)), user(text("Please analyze the image above."))}}};
                       }});
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("mcp"));
  spdlog::set_level(std::getenv("VS_MCP_DEBUG") ? spdlog::level::debug : spdlog::level::warn);
  std::string mode = argc > 1 ? argv[1] : "";
  HttpOptions options;
  for (int i = 2; i < argc && mode == "http"; ++i) {
    std::string arg = argv[i];
    if (arg == "--sse-responses") options.sse_responses = true;
    else options.port = static_cast<uint16_t>(std::stoi(arg));
  }
  if (mode != "http" && mode != "stdio") {
    std::cerr << "usage: mcp_conformance_server http [--sse-responses] [PORT] | stdio\n";
    return 2;
  }
  Registry registry;
  add_tools(registry);
  add_resources(registry);
  add_prompts(registry);
  Server server({"mcp-conformance-test-server", "vramscope MCP conformance fixtures", "1.0.0",
                 "Fixture tools, resources and prompts of the MCP conformance suite."},
                std::move(registry));
  if (mode == "stdio") {
    auto status = run_stdio(server, std::cin, std::cout);
    if (!status) spdlog::error("{}", status.message());
    return status ? 0 : 1;
  }
  // Block the stop signals in every thread; main waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  HttpServer http(server, options);
  auto port = http.start();
  if (!port) {
    spdlog::error("{}", port.error().message);
    return 1;
  }
  std::cout << "listening on http://127.0.0.1:" << *port << options.endpoint << std::endl;
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  http.stop();
  return 0;
}
