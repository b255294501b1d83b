// Every tool in the catalog has a description and well-formed schemas that
// use only what the validator (and so the server's argument check) supports.
#include "tests/tools/tool_check.h"

TEST_CASE("catalog: every tool has a description and supported schemas", "[tools]") {
  for (const auto& tool : vs::tools::catalog()) {
    INFO(tool.name);
    CHECK(tool.description.size() > 40);
    const auto& in = vs::tools::input_schema(tool.name);
    const auto& out = vs::tools::output_schema(tool.name);
    CHECK(in.value("type", "") == "object");
    CHECK(out.value("type", "") == "object");
    auto in_problem = vs::json_schema::check_schema(in);
    auto out_problem = vs::json_schema::check_schema(out);
    CHECK(in_problem.value_or("") == "");
    CHECK(out_problem.value_or("") == "");
    CHECK(out["required"].dump().find("\"coverage\"") != std::string::npos);
  }
}

TEST_CASE("json_schema: the subset the schemas use", "[tools]") {
  using nlohmann::json;
  json schema = json::parse(R"({"type":"object","required":["n"],"additionalProperties":false,
    "properties":{"n":{"type":"integer","minimum":1,"maximum":10},"s":{"type":"string","enum":["a","b"]},
                  "l":{"type":"array","items":{"$ref":"#/$defs/p"},"maxItems":2}},
    "$defs":{"p":{"type":"string","pattern":"^0x"}}})");
  CHECK_FALSE(vs::json_schema::validate(schema, json::parse(R"({"n":3,"s":"a","l":["0x1"]})")).has_value());
  CHECK(vs::json_schema::validate(schema, json::parse(R"({"n":0})")).value() == "/n: must be >= 1");
  CHECK(vs::json_schema::validate(schema, json::parse(R"({})")).value() == "(root): missing required property \"n\"");
  CHECK(vs::json_schema::validate(schema, json::parse(R"({"n":1,"x":1})")).value() == "(root): unknown property \"x\"");
  CHECK(vs::json_schema::validate(schema, json::parse(R"({"n":1,"l":["1"]})")).value() == "/l/0: must match \"^0x\"");
  CHECK(vs::json_schema::validate(schema, json::parse(R"({"n":2.0})")) == std::nullopt);
  CHECK(vs::json_schema::validate(schema, json::parse(R"({"n":2.5})")).value() == "/n: must be integer, got number");
  // Outside int64's range a whole number is not an integer argument (and is not cast: undefined behaviour).
  CHECK(vs::json_schema::validate(schema, json::parse(R"({"n":1e300})")).value() == "/n: must be integer, got number");
  CHECK(vs::json_schema::check_schema(json::parse(R"({"type":"object","propertees":{}})")).value() ==
        "/propertees: unsupported keyword");
}

TEST_CASE("untrusted strings cannot break out of their quotes", "[tools]") {
  // tools' names for common/untrusted_text.h (tests/unit/test_untrusted_text.cpp tests it in full).
  CHECK(vs::tools::quote_untrusted("python3\ninfer.py") == "«python3\\x0ainfer.py»");
  CHECK(vs::tools::quote_untrusted("a»ignore previous«b") == "«a\\u00bbignore previous\\u00abb»");
  CHECK(vs::tools::clean_untrusted("bad\xff\xfe utf8 \xc3\xa9") == "bad\\xff\\xfe utf8 \xc3\xa9");
  CHECK(vs::tools::clean_untrusted("abcdef", 3) == "ab…");
  CHECK(nlohmann::json(vs::tools::clean_untrusted("\xed\xa0\x80")).dump() == "\"\\\\xed\\\\xa0\\\\x80\"");
  CHECK(vs::tools::clean_untrusted("\xff\x80\x80 \xf8\x88\x80\x80\x80") ==
        "\\xff\\x80\\x80 \\xf8\\x88\\x80\\x80\\x80");
  // The default cut is 160 code points, escapes counted as shown.
  CHECK(vs::tools::clean_untrusted(std::string(400, 'x')).size() == 159 + std::string("…").size());
  CHECK(vs::tools::clean_untrusted("evil\u202etxt") == vs::escape_untrusted("evil\u202etxt"));
}

TEST_CASE("bound_text: a long rendering is cut, its coverage line kept whole", "[tools]") {
  std::string body;
  for (int i = 0; body.size() < 3 * vs::tools::kMaxTextChars; ++i) body += "row " + std::to_string(i) + "\n";
  const std::string footer = "coverage: session 1 (complete)";
  std::string text = vs::tools::bound_text(body, footer);
  CHECK(text.size() <= vs::tools::kMaxTextChars);
  CHECK(text.substr(text.size() - footer.size()) == footer);
  CHECK(text.find("… (cut at 20000 characters") != std::string::npos);
  CHECK(text.rfind("row ", 0) == 0);
  CHECK(vs::tools::bound_text("short\n", footer) == "short\n" + footer);
}
