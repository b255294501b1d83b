#include "common/json_schema.h"

#include <cmath>
#include <regex>
#include <set>
#include <string_view>

namespace vs::json_schema {
namespace {

using nlohmann::json;

const std::set<std::string_view> kValidationKeywords = {
    "type",      "enum",      "const",     "properties", "required",         "additionalProperties",
    "items",     "minItems",  "maxItems",  "minimum",    "maximum",          "exclusiveMinimum",
    "exclusiveMaximum",       "minLength", "maxLength",  "pattern",          "anyOf",
    "oneOf",     "allOf",     "if",        "then",       "else",             "$ref",
    "$anchor",   "$defs",     "definitions"};
const std::set<std::string_view> kAnnotations = {"title",   "description", "default", "examples",
                                                 "format",  "$schema",     "$id",     "$comment",
                                                 "readOnly", "deprecated"};

std::string escape_pointer(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

bool has_type(const json& v, std::string_view type) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "boolean") return v.is_boolean();
  if (type == "null") return v.is_null();
  if (type == "number") return v.is_number();
  if (type == "integer") {
    if (v.is_number_integer()) return true;
    // 2020-12: a number with a zero fractional part is an integer. Only within int64's range, where the
    // arguments are read as int64 (casting 1e300 to an integer is undefined behaviour).
    if (!v.is_number_float()) return false;
    const double d = v.get<double>();
    return std::isfinite(d) && std::trunc(d) == d && d >= -9.2e18 && d <= 9.2e18;
  }
  return false;
}

class Validator {
 public:
  explicit Validator(const json& root) : root_(root) {}

  std::optional<std::string> run(const json& schema, const json& v, const std::string& path) const {
    if (schema.is_boolean()) {
      if (schema.get<bool>()) return std::nullopt;
      return fail(path, "not allowed here");
    }
    if (!schema.is_object()) return fail(path, "schema is not an object");
    if (auto it = schema.find("$ref"); it != schema.end()) {
      const json* target = resolve(it->get<std::string>());
      if (!target) return fail(path, "unresolvable $ref " + it->get<std::string>());
      if (auto e = run(*target, v, path)) return e;
    }
    if (auto it = schema.find("type"); it != schema.end()) {
      bool ok = false;
      std::string names;
      if (it->is_string()) {
        ok = has_type(v, it->get<std::string>());
        names = it->get<std::string>();
      } else {
        for (const auto& t : *it) {
          ok = ok || has_type(v, t.get<std::string>());
          names += (names.empty() ? "" : " or ") + t.get<std::string>();
        }
      }
      if (!ok) return fail(path, "must be " + names + ", got " + std::string(v.type_name()));
    }
    if (auto it = schema.find("const"); it != schema.end() && v != *it) return fail(path, "must be " + it->dump());
    if (auto it = schema.find("enum"); it != schema.end()) {
      bool found = false;
      for (const auto& e : *it) found = found || e == v;
      if (!found) return fail(path, "must be one of " + it->dump());
    }
    if (v.is_number()) {
      double x = v.get<double>();
      if (auto it = schema.find("minimum"); it != schema.end() && x < it->get<double>())
        return fail(path, "must be >= " + it->dump());
      if (auto it = schema.find("maximum"); it != schema.end() && x > it->get<double>())
        return fail(path, "must be <= " + it->dump());
      if (auto it = schema.find("exclusiveMinimum"); it != schema.end() && x <= it->get<double>())
        return fail(path, "must be > " + it->dump());
      if (auto it = schema.find("exclusiveMaximum"); it != schema.end() && x >= it->get<double>())
        return fail(path, "must be < " + it->dump());
    }
    if (v.is_string()) {
      const auto& s = v.get_ref<const std::string&>();
      if (auto it = schema.find("minLength"); it != schema.end() && s.size() < it->get<size_t>())
        return fail(path, "must be at least " + it->dump() + " characters");
      if (auto it = schema.find("maxLength"); it != schema.end() && s.size() > it->get<size_t>())
        return fail(path, "must be at most " + it->dump() + " characters");
      if (auto it = schema.find("pattern"); it != schema.end() &&
                                            !std::regex_search(s, std::regex(it->get<std::string>(), std::regex::ECMAScript)))
        return fail(path, "must match " + it->dump());
    }
    if (v.is_array()) {
      if (auto it = schema.find("minItems"); it != schema.end() && v.size() < it->get<size_t>())
        return fail(path, "must have at least " + it->dump() + " items");
      if (auto it = schema.find("maxItems"); it != schema.end() && v.size() > it->get<size_t>())
        return fail(path, "must have at most " + it->dump() + " items");
      if (auto it = schema.find("items"); it != schema.end()) {
        for (size_t i = 0; i < v.size(); ++i)
          if (auto e = run(*it, v[i], path + "/" + std::to_string(i))) return e;
      }
    }
    if (v.is_object()) {
      if (auto it = schema.find("required"); it != schema.end()) {
        for (const auto& name : *it)
          if (!v.contains(name.get<std::string>()))
            return fail(path, "missing required property \"" + name.get<std::string>() + "\"");
      }
      const json* props = schema.contains("properties") ? &schema["properties"] : nullptr;
      const json* extra = schema.contains("additionalProperties") ? &schema["additionalProperties"] : nullptr;
      for (const auto& [key, value] : v.items()) {
        std::string sub = path + "/" + escape_pointer(key);
        if (props && props->contains(key)) {
          if (auto e = run((*props)[key], value, sub)) return e;
        } else if (extra) {
          if (extra->is_boolean() && !extra->get<bool>()) return fail(path, "unknown property \"" + key + "\"");
          if (auto e = run(*extra, value, sub)) return e;
        }
      }
    }
    if (auto it = schema.find("allOf"); it != schema.end()) {
      for (const auto& s : *it)
        if (auto e = run(s, v, path)) return e;
    }
    if (auto it = schema.find("anyOf"); it != schema.end()) {
      std::optional<std::string> first;
      bool any = false;
      for (const auto& s : *it) {
        auto e = run(s, v, path);
        if (!e) { any = true; break; }
        if (!first) first = e;
      }
      if (!any) return fail(path, "matches none of anyOf (first: " + *first + ")");
    }
    if (auto it = schema.find("oneOf"); it != schema.end()) {
      int matches = 0;
      for (const auto& s : *it) matches += run(s, v, path) ? 0 : 1;
      if (matches != 1) return fail(path, "must match exactly one of oneOf, matches " + std::to_string(matches));
    }
    if (auto it = schema.find("if"); it != schema.end()) {
      bool holds = !run(*it, v, path);
      auto branch = schema.find(holds ? "then" : "else");
      if (branch != schema.end())
        if (auto e = run(*branch, v, path))
          return *e + (holds ? " (\"then\": its \"if\" holds)" : " (\"else\": its \"if\" fails)");
    }
    return std::nullopt;
  }

 private:
  static std::optional<std::string> fail(const std::string& path, const std::string& what) {
    return (path.empty() ? std::string("(root)") : path) + ": " + what;
  }
  const json* resolve(const std::string& ref) const {
    if (ref.size() > 1 && ref[0] == '#' && ref[1] != '/') return find_anchor(root_, ref.substr(1));
    for (std::string_view prefix : {"#/$defs/", "#/definitions/"}) {
      if (ref.rfind(prefix, 0) == 0) {
        std::string name = ref.substr(prefix.size());
        std::string section(prefix.substr(2, prefix.size() - 3));
        if (root_.contains(section) && root_[section].contains(name)) return &root_[section][name];
      }
    }
    return nullptr;
  }
  // The subschema declaring `"$anchor": name`, searched depth-first.
  static const json* find_anchor(const json& schema, const std::string& name) {
    if (!schema.is_object() && !schema.is_array()) return nullptr;
    if (schema.is_object() && schema.value("$anchor", json()) == name) return &schema;
    for (const auto& child : schema)
      if (const json* found = find_anchor(child, name)) return found;
    return nullptr;
  }
  const json& root_;
};

std::optional<std::string> check(const json& schema, const std::string& path) {
  if (schema.is_boolean()) return std::nullopt;
  if (!schema.is_object()) return path + ": a schema must be an object or a boolean";
  for (const auto& [key, value] : schema.items()) {
    std::string sub = path + "/" + escape_pointer(key);
    if (kAnnotations.count(key)) continue;
    if (!kValidationKeywords.count(key)) return sub + ": unsupported keyword";
    if (key == "properties" || key == "$defs" || key == "definitions") {
      for (const auto& [name, s] : value.items())
        if (auto e = check(s, sub + "/" + escape_pointer(name))) return e;
    } else if (key == "items" || key == "additionalProperties" || key == "if" || key == "then" || key == "else") {
      if (auto e = check(value, sub)) return e;
    } else if (key == "anyOf" || key == "oneOf" || key == "allOf") {
      for (size_t i = 0; i < value.size(); ++i)
        if (auto e = check(value[i], sub + "/" + std::to_string(i))) return e;
    } else if (key == "pattern") {
      try {
        std::regex(value.get<std::string>(), std::regex::ECMAScript);
      } catch (const std::regex_error&) {
        return sub + ": not a valid regular expression";
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> validate(const json& schema, const json& instance) {
  return Validator(schema).run(schema, instance, "");
}

std::optional<std::string> check_schema(const json& schema) { return check(schema, ""); }

}  // namespace vs::json_schema
