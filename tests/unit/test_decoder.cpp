// CallDecoder: the caller's path comes from the object records the return
// probe sends, so it survives the process; nothing is guessed when it is unknown.
#include <catch2/catch.hpp>
#include <cstring>

#include "common/cuda_api.h"
#include "tracer/decoder.h"

using namespace vs::tracer;

namespace {

// A pid that no process has: /proc/PID/maps cannot be read for it.
constexpr std::uint32_t kGonePid = 0x3fffff00;
constexpr std::uint32_t kDev = (8u << 20) | 2u;

vs_object_event object_record(std::uint64_t ino, std::initializer_list<const char*> file_first) {
  vs_object_event ob{};
  ob.type = VS_REC_OBJECT;
  ob.ino = ino;
  ob.dev = kDev;
  ob.pid = kGonePid;
  for (const char* name : file_first) std::strcpy(ob.components[ob.ncomponents++], name);
  return ob;
}

vs_call_event call_from(std::uint64_t ino) {
  vs_call_event ev{};
  ev.type = VS_REC_CALL;
  ev.seq = 1;
  ev.pid = ev.tid = kGonePid;
  ev.api = 1;
  ev.caller_ino = ino;
  ev.caller_dev = kDev;
  return ev;
}

}  // namespace

TEST_CASE("a caller's path comes from its object record, after its process is gone", "[decoder]") {
  CallDecoder dec(1);
  dec.objects().add_object(object_record(77, {"libc10_cuda.so", "lib", "torch", "site-packages", "opt"}));
  auto c = dec.decode(call_from(77));
  REQUIRE(c.caller);
  CHECK(*c.caller == "/opt/site-packages/torch/lib/libc10_cuda.so");
}

TEST_CASE("an unknown or incomplete caller path stays unknown", "[decoder]") {
  CallDecoder dec(1);
  auto truncated = object_record(78, {"libcublasLt.so.13", "lib"});
  truncated.flags = VS_OBJECT_TRUNCATED;
  dec.objects().add_object(truncated);
  CHECK_FALSE(dec.decode(call_from(78)).caller);
  CHECK_FALSE(dec.decode(call_from(79)).caller);  // no record at all
  CHECK_FALSE(dec.decode(call_from(0)).caller);   // anonymous code
}

TEST_CASE("a path read from /proc/PID/maps is kept over an object record", "[decoder]") {
  ObjectPaths paths;
  paths.add(kDev, 80, "/usr/lib/x86_64-linux-gnu/libcuda.so.1");
  paths.add_object(object_record(80, {"libcuda.so.1", "elsewhere"}));
  REQUIRE(paths.find(kDev, 80));
  CHECK(*paths.find(kDev, 80) == "/usr/lib/x86_64-linux-gnu/libcuda.so.1");
}

TEST_CASE("a call's scheduler part comes only with calls that were switched out", "[decoder]") {
  CallDecoder dec(1);
  vs_call_sched_event rec{};
  rec.call = call_from(0);
  rec.call.type = VS_REC_CALL_SCHED;
  rec.sched.off_cpu_ns = 5'000'000;
  rec.sched.runq_ns = 1'000'000;
  rec.sched.longest_off_ns = 4'000'000;
  rec.sched.switches = 3;
  rec.sched.preemptor_pid = 4242;
  std::strcpy(rec.sched.preemptor_comm, "cpu-hog");
  auto c = dec.decode(rec.call, &rec.sched);
  CHECK(c.off_cpu_ns == 5'000'000);
  CHECK(c.runq_ns == 1'000'000);
  CHECK(c.switches == 3);
  CHECK(c.preempted_by == 4242u);
  CHECK(c.preempted_by_comm == "cpu-hog");
  CHECK(c.longest_off_ns == 4'000'000);

  auto plain = dec.decode(call_from(0));  // VS_REC_CALL: stayed on its CPU
  CHECK(plain.off_cpu_ns == 0);
  CHECK(plain.switches == 0);
  CHECK_FALSE(plain.preempted_by);
  CHECK_FALSE(plain.longest_off_ns);
}

TEST_CASE("a call record's argument words are the ones its API's plan names", "[decoder]") {
  // cudaMalloc(void** devPtr, size_t size): the record carries size (A1); the pointer is read at return.
  CallDecoder dec(1);
  const vs::ApiInfo* malloc_api = vs::find_api("cudaMalloc");
  REQUIRE(malloc_api);
  vs_call_event ev = call_from(0);
  ev.api = malloc_api->id;
  REQUIRE(malloc_api->words[0] == 1);
  CHECK(malloc_api->words[1] == -1);
  ev.words[0] = 4096;
  ev.out[0] = 0x7f0000200000;
  auto c = dec.decode(ev);
  CHECK(c.bytes == 4096u);
  CHECK(c.ptr == 0x7f0000200000u);
}
