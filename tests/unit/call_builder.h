// Builds CallRecords for the unit tests by API name.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "common/cuda_api.h"
#include "common/records.h"

namespace vs::test {

inline std::uint16_t api_id(std::string_view name) {
  const ApiInfo* api = find_api(name);
  if (api == nullptr) throw std::logic_error("no such API in the catalog: " + std::string(name));
  return api->id;
}

struct Call {
  vs::CallRecord r;
  Call(std::int64_t id, std::string_view api, std::uint32_t pid = 100, std::uint32_t tid = 0) {
    r.id = id;
    r.api_id = api_id(api);
    r.pid = pid;
    r.tid = tid != 0 ? tid : pid;
    r.ts_ns = id * 1000;
    r.dur_ns = 10;
  }
  Call& ptr(std::uint64_t v) { r.ptr = v; return *this; }
  Call& bytes(std::uint64_t v) { r.bytes = v; return *this; }
  Call& handle(std::uint64_t v) { r.handle = v; return *this; }
  Call& device(std::int64_t v) { r.device = v; return *this; }
  Call& stream(std::uint64_t v) { r.stream = v; return *this; }
  Call& ret(std::int64_t v) { r.ret = v; return *this; }
  Call& ts(std::int64_t ts_ns, std::int64_t dur_ns) { r.ts_ns = ts_ns; r.dur_ns = dur_ns; return *this; }
  Call& caller(std::string v) { r.caller = std::move(v); return *this; }
  Call& parent(std::int64_t id, std::string_view api) { r.parent_id = id; r.parent_api_id = api_id(api); return *this; }
  Call& incomplete() { r.incomplete = true; return *this; }
  operator const vs::CallRecord&() const { return r; }
};

}  // namespace vs::test
