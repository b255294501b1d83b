// libFuzzer harness: the ring-buffer record decoder (tracer/decoder.h) and
// what the tracer does with its output, allocation pairing (store/pairing.h).
// An input is a stream of ring records, each framed as
//   u8 ring (0: the call ring, 1: the lifecycle ring), u16 size (little
//   endian), then `size` bytes of record,
// the framing that libbpf gives the tracer's callbacks (a pointer and a size).
// Records are dispatched as tracer/loader.cpp's ring callbacks dispatch them
// (by the first u32 and the size), then handled as src/trace_command.cpp's
// sink handles them: call records are decoded by CallDecoder and paired,
// object records feed ObjectPaths, a process exit forgets the process and
// closes its allocations. Properties: no memory error or UB, and a decoded
// call keeps the record's identity (pid, tid, api, id from seq).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "store/pairing.h"
#include "tests/fuzz/fuzz_support.h"
#include "tracer/bpf/events.h"
#include "tracer/decoder.h"

using namespace vs;

namespace {

// The ring's records are 8-byte aligned; libFuzzer's data is not.
template <class T>
T load(const uint8_t* data, size_t size) {
  T value{};
  std::memcpy(&value, data, std::min(size, sizeof(T)));
  return value;
}

struct Pipeline {
  tracer::CallDecoder decoder{1000};
  store::Pairing pairing;
  store::PairingOps ops;
  std::map<uint32_t, int64_t> top_level_calls;

  void on_call(const vs_call_event& ev, const vs_call_sched* sched) {
    vs::CallRecord call = decoder.decode(ev, sched);
    if (call.pid != ev.pid || call.tid != ev.tid || call.api_id != ev.api ||
        call.id != static_cast<int64_t>(uint64_t{1000} + ev.seq - 1))
      fuzz::fail("the decoded call lost the record's identity");
    ops.opened.clear();
    ops.closed.clear();
    ops.unmatched.clear();
    // store/store.cpp numbers each process's top-level calls (call_rows.seq).
    std::optional<int64_t> seq;
    if (!call.parent_id) seq = ++top_level_calls[call.pid];
    pairing.on_call(call, seq, ops);
  }

  // tracer/loader.cpp, make_rings(): on_call.
  void call_ring(const uint8_t* data, size_t size) {
    if (size < sizeof(vs_u32)) return;
    const auto type = load<vs_u32>(data, size);
    if (type == VS_REC_CALL && size >= sizeof(vs_call_event)) {
      on_call(load<vs_call_event>(data, size), nullptr);
    } else if (type == VS_REC_CALL_SCHED && size >= sizeof(vs_call_sched_event)) {
      const auto ev = load<vs_call_sched_event>(data, size);
      on_call(ev.call, &ev.sched);
    } else if (type == VS_REC_OBJECT && size >= sizeof(vs_object_event)) {
      decoder.objects().add_object(load<vs_object_event>(data, size));
    }
  }

  // on_lifecycle; of the sink's handling, what reaches the decoder and pairing.
  void lifecycle_ring(const uint8_t* data, size_t size) {
    if (size < sizeof(vs_lifecycle_event)) return;
    const auto ev = load<vs_lifecycle_event>(data, size);
    if (ev.kind == VS_LC_EXIT) {
      decoder.forget_process(ev.pid);
      pairing.on_process_exit(ev.pid, static_cast<int64_t>(ev.ts_ns));
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Pipeline pipeline;
  while (size >= 3) {
    const uint8_t ring = data[0];
    size_t length = static_cast<size_t>(data[1]) | static_cast<size_t>(data[2]) << 8;
    data += 3;
    size -= 3;
    length = std::min(length, size);
    // A copy of exactly `length` bytes: ASan sees any read past the record.
    std::vector<uint8_t> record(data, data + length);
    if (ring % 2 == 0)
      pipeline.call_ring(record.data(), record.size());
    else
      pipeline.lifecycle_ring(record.data(), record.size());
    data += length;
    size -= length;
  }
  return 0;
}
