// A JSON Schema validator for the subset of draft 2020-12 that vramscope's
// schemas (schemas/*.json) use. Debian 12 packages no C++ validator, so this
// is small on purpose: the server checks tool arguments with it, and the tests
// check every structuredContent against its outputSchema.
//
// Supported: type (string or array), enum, const, properties, required,
// additionalProperties (bool or schema), items, minItems, maxItems, minimum,
// maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern,
// anyOf, oneOf, allOf, if/then/else, $ref to "#/$defs/<name>" (or
// "#/definitions/<name>") or to "#<anchor>" (a subschema's $anchor).
// Annotations (title, description, default, examples, format, $schema, $id)
// are accepted and ignored. An unknown keyword is an error in `check_schema`,
// so a typo in a schema file fails a test instead of validating nothing.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace vs::json_schema {

// nullopt when `instance` is valid; otherwise the first violation, as
// "<JSON pointer>: <what is wrong>", e.g. "/limit: must be <= 1000".
std::optional<std::string> validate(const nlohmann::json& schema, const nlohmann::json& instance);

// nullopt when every keyword of `schema` (recursively) is one this validator
// implements or knowingly ignores; otherwise the first unsupported keyword.
std::optional<std::string> check_schema(const nlohmann::json& schema);

}  // namespace vs::json_schema
