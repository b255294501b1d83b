#include <catch2/catch.hpp>

#include "store/pairing.h"
#include "call_builder.h"

using vs::AllocKind;
using vs::store::OutstandingTotals;
using vs::store::Pairing;
using vs::store::PairingOps;
using vs::test::Call;

namespace {

std::uint64_t by_kind(const OutstandingTotals& t, AllocKind k) { return t.bytes_by_kind[static_cast<int>(k)]; }

bool nothing(const PairingOps& ops) { return ops.opened.empty() && ops.closed.empty() && ops.unmatched.empty(); }

constexpr std::uint64_t kPtr = 0x7f0000000000;

}  // namespace

TEST_CASE("pairing: alloc and free on the same thread pair by (pid, ptr)", "[pairing]") {
  Pairing p;
  auto a = p.on_call(Call(1, "cudaMalloc", 100).ptr(kPtr).bytes(4096).device(0).caller("/lib/libtorch.so").ts(1000, 50));
  REQUIRE(a.opened.size() == 1);
  CHECK(a.closed.empty());
  CHECK(a.unmatched.empty());
  const auto& o = a.opened[0];
  CHECK(o.id == 1);
  CHECK(o.pid == 100);
  CHECK(o.device == std::optional<std::int64_t>(0));
  CHECK(o.kind == AllocKind::Device);
  CHECK(o.ptr == kPtr);
  CHECK(o.bytes == 4096);
  CHECK_FALSE(o.handle.has_value());
  CHECK(o.alloc_call_id == 1);
  CHECK(o.alloc_ts_ns == 1000);
  CHECK(o.caller == std::optional<std::string>("/lib/libtorch.so"));
  CHECK(by_kind(p.totals(), AllocKind::Device) == 4096);
  CHECK(p.totals().open_count == 1);
  CHECK(p.totals().device_bytes() == 4096);

  auto f = p.on_call(Call(2, "cudaFree", 100).ptr(kPtr).ts(2000, 30));
  REQUIRE(f.closed.size() == 1);
  CHECK(f.opened.empty());
  CHECK(f.closed[0].id == 1);
  CHECK(f.closed[0].free_call_id == std::optional<std::int64_t>(2));
  CHECK(f.closed[0].free_ts_ns == 2030);  // the free has completed when it returns
  CHECK(f.closed[0].end_reason == "freed");
  CHECK(p.totals().open_count == 0);
  CHECK(p.totals().device_bytes() == 0);
}

TEST_CASE("pairing: a free on another thread of the same process pairs; another process does not", "[pairing]") {
  Pairing p;
  p.on_call(Call(1, "cudaMalloc", 100, 101).ptr(kPtr).bytes(512));
  auto other_pid = p.on_call(Call(2, "cudaFree", 200, 201).ptr(kPtr));
  CHECK(other_pid.closed.empty());
  REQUIRE(other_pid.unmatched.size() == 1);
  CHECK(other_pid.unmatched[0].call_id == 2);
  CHECK(other_pid.unmatched[0].pid == 200);
  CHECK(other_pid.unmatched[0].ptr == std::optional<std::uint64_t>(kPtr));

  auto f = p.on_call(Call(3, "cudaFree", 100, 102).ptr(kPtr));
  REQUIRE(f.closed.size() == 1);
  CHECK(f.closed[0].id == 1);
  CHECK(f.closed[0].free_call_id == std::optional<std::int64_t>(3));
  CHECK(p.totals().open_count == 0);
}

TEST_CASE("pairing: a driver alloc nested in cudaMalloc is counted once", "[pairing]") {
  Pairing p;
  // The nested cuMemAlloc_v2 returns first, so it arrives first.
  auto child = p.on_call(Call(2, "cuMemAlloc_v2").ptr(kPtr).bytes(1 << 20).parent(1, "cudaMalloc"));
  CHECK(nothing(child));
  auto parent = p.on_call(Call(1, "cudaMalloc").ptr(kPtr).bytes(1 << 20));
  REQUIRE(parent.opened.size() == 1);
  CHECK(parent.opened[0].alloc_call_id == 1);
  CHECK(p.totals().open_count == 1);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 1 << 20);

  // The same for the free: cuMemFree_v2 inside cudaFree.
  CHECK(nothing(p.on_call(Call(4, "cuMemFree_v2").ptr(kPtr).parent(3, "cudaFree"))));
  CHECK(p.totals().open_count == 1);
  auto f = p.on_call(Call(3, "cudaFree").ptr(kPtr));
  REQUIRE(f.closed.size() == 1);
  CHECK(f.closed[0].free_call_id == std::optional<std::int64_t>(3));
  CHECK(p.totals().open_count == 0);

  // Pinned host memory likewise.
  CHECK(nothing(p.on_call(Call(6, "cuMemHostAlloc").ptr(0x5000).bytes(64).parent(5, "cudaMallocHost"))));
  REQUIRE(p.on_call(Call(5, "cudaMallocHost").ptr(0x5000).bytes(64)).opened.size() == 1);
  CHECK(nothing(p.on_call(Call(8, "cuMemFreeHost").ptr(0x5000).parent(7, "cudaFreeHost"))));
  REQUIRE(p.on_call(Call(7, "cudaFreeHost").ptr(0x5000)).closed.size() == 1);
  CHECK(p.totals().open_count == 0);
}

TEST_CASE("pairing: a driver alloc without a runtime alloc parent is paired itself", "[pairing]") {
  Pairing p;
  // e.g. cuBLAS calling cuMemAlloc_v2 directly
  auto a = p.on_call(Call(1, "cuMemAlloc_v2").ptr(kPtr).bytes(256).device(1));
  REQUIRE(a.opened.size() == 1);
  CHECK(a.opened[0].kind == AllocKind::Device);
  CHECK(a.opened[0].device == std::optional<std::int64_t>(1));
  // Nested in a runtime call that is not an alloc/free (a lazy allocation inside a sync): paired too.
  auto b = p.on_call(Call(3, "cuMemAlloc_v2").ptr(kPtr + 4096).bytes(128).parent(2, "cudaDeviceSynchronize"));
  REQUIRE(b.opened.size() == 1);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 384);
  auto f = p.on_call(Call(4, "cuMemFree_v2").ptr(kPtr));
  REQUIRE(f.closed.size() == 1);
  CHECK(f.closed[0].id == a.opened[0].id);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 128);
}

TEST_CASE("pairing: failed and incomplete calls change nothing", "[pairing]") {
  Pairing p;
  CHECK(nothing(p.on_call(Call(1, "cudaMalloc").ptr(kPtr).bytes(100).ret(2))));  // cudaErrorMemoryAllocation
  CHECK(p.totals().open_count == 0);
  CHECK(nothing(p.on_call(Call(2, "cudaMalloc").ptr(kPtr).bytes(100).incomplete())));
  CHECK(p.totals().open_count == 0);

  REQUIRE(p.on_call(Call(3, "cudaMalloc").ptr(kPtr).bytes(100)).opened.size() == 1);
  CHECK(nothing(p.on_call(Call(4, "cudaFree").ptr(kPtr).ret(1))));  // failed free: still allocated
  CHECK(nothing(p.on_call(Call(5, "cudaFree").ptr(kPtr).incomplete())));
  CHECK(p.totals().open_count == 1);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 100);
  auto f = p.on_call(Call(6, "cudaFree").ptr(kPtr));
  REQUIRE(f.closed.size() == 1);
  CHECK(f.closed[0].id == 1);  // the failed calls took no id
}

TEST_CASE("pairing: cudaFree(0) is ignored, an unknown pointer is an unmatched free", "[pairing]") {
  Pairing p;
  CHECK(nothing(p.on_call(Call(1, "cudaFree").ptr(0))));
  CHECK(nothing(p.on_call(Call(2, "cudaFreeHost").ptr(0))));
  auto u = p.on_call(Call(3, "cudaFree", 300).ptr(0xdead0000));
  CHECK(u.closed.empty());
  REQUIRE(u.unmatched.size() == 1);
  CHECK(u.unmatched[0].call_id == 3);
  CHECK(u.unmatched[0].pid == 300);
  CHECK(u.unmatched[0].ptr == std::optional<std::uint64_t>(0xdead0000));
  // Non-memory calls do nothing.
  CHECK(nothing(p.on_call(Call(4, "cudaMemcpy").ptr(kPtr).bytes(10))));
  CHECK(nothing(p.on_call(Call(5, "cudaLaunchKernel").ptr(0x1234))));
  CHECK(p.totals().open_count == 0);
}

TEST_CASE("pairing: kinds share one pointer namespace and have their own totals", "[pairing]") {
  Pairing p(1000);
  auto d = p.on_call(Call(1, "cudaMalloc").ptr(0x1000).bytes(1));
  auto a = p.on_call(Call(2, "cudaMallocAsync").ptr(0x2000).bytes(20).stream(7));
  auto m = p.on_call(Call(3, "cudaMallocManaged").ptr(0x3000).bytes(300));
  auto h = p.on_call(Call(4, "cudaHostAlloc").ptr(0x4000).bytes(4000));
  CHECK(d.opened.at(0).id == 1000);  // ids are sequential from first_allocation_id
  CHECK(a.opened.at(0).id == 1001);
  CHECK(m.opened.at(0).id == 1002);
  CHECK(h.opened.at(0).id == 1003);
  CHECK(a.opened[0].kind == AllocKind::Async);
  CHECK(m.opened[0].kind == AllocKind::Managed);
  CHECK(h.opened[0].kind == AllocKind::Host);
  const auto& t = p.totals();
  CHECK(by_kind(t, AllocKind::Device) == 1);
  CHECK(by_kind(t, AllocKind::Async) == 20);
  CHECK(by_kind(t, AllocKind::Managed) == 300);
  CHECK(by_kind(t, AllocKind::Host) == 4000);
  CHECK(t.open_count == 4);
  CHECK(t.device_bytes() == 321);  // pinned host memory is not GPU memory

  REQUIRE(p.on_call(Call(5, "cudaFreeAsync").ptr(0x2000).stream(7)).closed.size() == 1);
  REQUIRE(p.on_call(Call(6, "cudaFreeHost").ptr(0x4000)).closed.size() == 1);
  CHECK(by_kind(t, AllocKind::Async) == 0);
  CHECK(by_kind(t, AllocKind::Host) == 0);
  CHECK(t.open_count == 2);
}

TEST_CASE("pairing: zero-byte cudaMalloc returning NULL allocates nothing", "[pairing]") {
  Pairing p;
  CHECK(nothing(p.on_call(Call(1, "cudaMalloc").ptr(0).bytes(0))));
  CHECK(p.totals().open_count == 0);
}

TEST_CASE("pairing: VMM reserve, create, map, set access, unmap, release, address free", "[pairing]") {
  Pairing p;
  const std::uint64_t va = 0x7f1000000000, handle = 0xabc0, size = 2 << 20;
  auto k = [&](AllocKind kind) { return by_kind(p.totals(), kind); };

  auto r = p.on_call(Call(1, "cuMemAddressReserve").ptr(va).bytes(4 * size));
  REQUIRE(r.opened.size() == 1);
  CHECK(r.opened[0].kind == AllocKind::VmmReserved);
  CHECK(r.opened[0].ptr == va);
  CHECK(k(AllocKind::VmmReserved) == 4 * size);
  CHECK(p.totals().device_bytes() == 0);  // a reservation is address space, not memory

  auto c = p.on_call(Call(2, "cuMemCreate").handle(handle).bytes(size).device(1));
  REQUIRE(c.opened.size() == 1);
  CHECK(c.opened[0].kind == AllocKind::VmmPhysical);
  CHECK(c.opened[0].ptr == handle);  // vmm_physical: ptr is the handle
  CHECK_FALSE(c.opened[0].handle.has_value());
  CHECK(c.opened[0].device == std::optional<std::int64_t>(1));
  CHECK(k(AllocKind::VmmPhysical) == size);
  CHECK(p.totals().device_bytes() == size);

  auto m = p.on_call(Call(3, "cuMemMap").ptr(va).bytes(size).handle(handle));  // no device on the call
  REQUIRE(m.opened.size() == 1);
  CHECK(m.opened[0].kind == AllocKind::VmmMapped);
  CHECK(m.opened[0].ptr == va);
  CHECK(m.opened[0].bytes == size);
  CHECK(m.opened[0].handle == std::optional<std::uint64_t>(handle));
  CHECK(m.opened[0].device == std::optional<std::int64_t>(1));  // from the physical allocation
  CHECK(k(AllocKind::VmmMapped) == size);
  CHECK(p.totals().open_count == 3);
  CHECK(p.totals().device_bytes() == size);  // mapping does not count memory twice

  CHECK(nothing(p.on_call(Call(4, "cuMemSetAccess").ptr(va).bytes(size).device(1))));
  CHECK(p.totals().open_count == 3);

  auto u = p.on_call(Call(5, "cuMemUnmap").ptr(va).bytes(size));
  REQUIRE(u.closed.size() == 1);
  CHECK(u.closed[0].id == m.opened[0].id);
  CHECK(u.closed[0].end_reason == "freed");
  CHECK(k(AllocKind::VmmMapped) == 0);
  CHECK(k(AllocKind::VmmPhysical) == size);
  CHECK(k(AllocKind::VmmReserved) == 4 * size);

  auto rel = p.on_call(Call(6, "cuMemRelease").handle(handle));
  REQUIRE(rel.closed.size() == 1);
  CHECK(rel.closed[0].id == c.opened[0].id);
  CHECK(k(AllocKind::VmmPhysical) == 0);
  CHECK(p.totals().device_bytes() == 0);

  auto af = p.on_call(Call(7, "cuMemAddressFree").ptr(va).bytes(4 * size));
  REQUIRE(af.closed.size() == 1);
  CHECK(af.closed[0].id == r.opened[0].id);
  CHECK(af.closed[0].free_call_id == std::optional<std::int64_t>(7));
  CHECK(p.totals().open_count == 0);
  for (int i = 0; i < vs::kAllocKindSlots; ++i) CHECK(p.totals().bytes_by_kind[i] == 0);

  // Releasing, unmapping or freeing what was never seen is unmatched.
  auto ur = p.on_call(Call(8, "cuMemRelease").handle(0x999));
  REQUIRE(ur.unmatched.size() == 1);
  CHECK(ur.unmatched[0].ptr == std::optional<std::uint64_t>(0x999));
  CHECK(p.on_call(Call(9, "cuMemUnmap").ptr(va).bytes(size)).unmatched.size() == 1);
  CHECK(p.on_call(Call(10, "cuMemAddressFree").ptr(va).bytes(size)).unmatched.size() == 1);
}

TEST_CASE("pairing: a map of an unknown handle takes the call's device", "[pairing]") {
  Pairing p;
  auto m = p.on_call(Call(1, "cuMemMap").ptr(0x10000).bytes(4096).handle(0x77).device(3));
  REQUIRE(m.opened.size() == 1);
  CHECK(m.opened[0].device == std::optional<std::int64_t>(3));
}

TEST_CASE("pairing: one unmap closes every mapping starting in its range", "[pairing]") {
  Pairing p;
  const std::uint64_t va = 0x200000000, mb2 = 2 << 20;
  p.on_call(Call(1, "cuMemCreate").handle(1).bytes(mb2).device(0));
  p.on_call(Call(2, "cuMemCreate").handle(2).bytes(mb2).device(0));
  auto m1 = p.on_call(Call(3, "cuMemMap").ptr(va).bytes(mb2).handle(1));
  auto m2 = p.on_call(Call(4, "cuMemMap").ptr(va + mb2).bytes(mb2).handle(2));
  auto m3 = p.on_call(Call(5, "cuMemMap").ptr(va + 2 * mb2).bytes(mb2).handle(2));  // outside the unmap
  auto m4 = p.on_call(Call(6, "cuMemMap", 101).ptr(va).bytes(mb2).handle(9));       // another process
  CHECK(by_kind(p.totals(), AllocKind::VmmMapped) == 4 * mb2);

  auto u = p.on_call(Call(7, "cuMemUnmap").ptr(va).bytes(2 * mb2));
  REQUIRE(u.closed.size() == 2);
  CHECK(u.closed[0].id == m1.opened.at(0).id);
  CHECK(u.closed[1].id == m2.opened.at(0).id);
  CHECK(u.closed[0].free_call_id == std::optional<std::int64_t>(7));
  CHECK(u.unmatched.empty());
  CHECK(by_kind(p.totals(), AllocKind::VmmMapped) == 2 * mb2);
  CHECK(p.totals().open_count == 4);  // 2 physical + m3 + m4

  auto u3 = p.on_call(Call(8, "cuMemUnmap").ptr(va + 2 * mb2).bytes(mb2));
  REQUIRE(u3.closed.size() == 1);
  CHECK(u3.closed[0].id == m3.opened.at(0).id);
  auto u4 = p.on_call(Call(9, "cuMemUnmap", 101).ptr(va).bytes(mb2));
  REQUIRE(u4.closed.size() == 1);
  CHECK(u4.closed[0].id == m4.opened.at(0).id);
  CHECK(by_kind(p.totals(), AllocKind::VmmMapped) == 0);
}

TEST_CASE("pairing: process exit releases everything the process held", "[pairing]") {
  Pairing p;
  p.on_call(Call(1, "cudaMalloc", 100).ptr(0x1000).bytes(10));                  // id 1
  p.on_call(Call(2, "cudaMalloc", 200).ptr(0x1000).bytes(20));                  // id 2, other process
  p.on_call(Call(3, "cuMemAddressReserve", 100).ptr(0x900000).bytes(1 << 21));  // id 3
  p.on_call(Call(4, "cuMemCreate", 100).handle(5).bytes(1 << 21).device(0));     // id 4
  p.on_call(Call(5, "cuMemMap", 100).ptr(0x900000).bytes(1 << 21).handle(5));    // id 5
  p.on_call(Call(6, "cudaMallocHost", 100).ptr(0x7000).bytes(30));               // id 6
  p.on_call(Call(7, "cudaFree", 100).ptr(0x1000));                               // closes id 1
  CHECK(p.totals().open_count == 5);

  auto e = p.on_process_exit(100, 99999);
  CHECK(e.opened.empty());
  CHECK(e.unmatched.empty());
  REQUIRE(e.closed.size() == 4);
  const std::int64_t ids[] = {3, 4, 5, 6};  // in id order
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(e.closed[i].id == ids[i]);
    CHECK(e.closed[i].end_reason == "process_exit");
    CHECK_FALSE(e.closed[i].free_call_id.has_value());
    CHECK(e.closed[i].free_ts_ns == 99999);
  }
  CHECK(p.totals().open_count == 1);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 20);
  CHECK(p.totals().device_bytes() == 20);
  CHECK(by_kind(p.totals(), AllocKind::VmmReserved) == 0);
  CHECK(by_kind(p.totals(), AllocKind::Host) == 0);

  // Exiting again, or a process that held nothing, closes nothing.
  CHECK(nothing(p.on_process_exit(100, 100000)));
  CHECK(nothing(p.on_process_exit(12345, 100000)));
  // A reused pid starts clean.
  CHECK(p.on_call(Call(8, "cudaFree", 100).ptr(0x7000)).unmatched.size() == 1);
}

TEST_CASE("pairing: an allocation at a still-open pointer supersedes the old one", "[pairing]") {
  Pairing p;
  p.on_call(Call(1, "cudaMalloc").ptr(kPtr).bytes(100));
  auto again = p.on_call(Call(2, "cudaMalloc").ptr(kPtr).bytes(300).ts(5000, 25));  // the free was missed
  REQUIRE(again.closed.size() == 1);
  CHECK(again.closed[0].id == 1);
  CHECK(again.closed[0].end_reason == "superseded");
  CHECK(again.closed[0].free_call_id == std::optional<std::int64_t>(2));
  CHECK(again.closed[0].free_ts_ns == 5025);
  REQUIRE(again.opened.size() == 1);
  CHECK(again.opened[0].id == 2);
  CHECK(p.totals().open_count == 1);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 300);

  // Across kinds too: one pointer namespace.
  auto managed = p.on_call(Call(3, "cudaMallocManaged").ptr(kPtr).bytes(50));
  REQUIRE(managed.closed.size() == 1);
  CHECK(managed.closed[0].id == 2);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 0);
  CHECK(by_kind(p.totals(), AllocKind::Managed) == 50);

  auto f = p.on_call(Call(4, "cudaFree").ptr(kPtr));
  REQUIRE(f.closed.size() == 1);
  CHECK(f.closed[0].id == 3);
  CHECK(p.totals().open_count == 0);
}

TEST_CASE("pairing: allocations carry the seq of the calls that made and ended them", "[pairing]") {
  using Seq = std::optional<std::int64_t>;
  Pairing p;
  SECTION("cudaMalloc / cudaFree, cuMemCreate / cuMemRelease, cudaMallocAsync / cudaFreeAsync") {
    const struct {
      const char* alloc;
      const char* free;
      bool by_handle;
    } pairs[] = {{"cudaMalloc", "cudaFree", false}, {"cuMemCreate", "cuMemRelease", true},
                 {"cudaMallocAsync", "cudaFreeAsync", false}};
    std::int64_t id = 1;
    for (const auto& pair : pairs) {
      INFO(pair.alloc << " / " << pair.free);
      Call opening(id, pair.alloc), closing(id + 1, pair.free);
      if (pair.by_handle) {
        opening.handle(7).bytes(1 << 21);
        closing.handle(7);
      } else {
        opening.ptr(kPtr).bytes(256);
        closing.ptr(kPtr);
      }
      auto a = p.on_call(opening, Seq(10 * id));
      REQUIRE(a.opened.size() == 1);
      CHECK(a.opened[0].alloc_seq == Seq(10 * id));
      auto f = p.on_call(closing, Seq(10 * id + 3));
      REQUIRE(f.closed.size() == 1);
      CHECK(f.closed[0].id == a.opened[0].id);
      CHECK(f.closed[0].free_seq == Seq(10 * id + 3));
      id += 2;
    }
  }
  SECTION("superseded: the seq of the allocation call that took the address over") {
    p.on_call(Call(1, "cudaMalloc").ptr(kPtr).bytes(100), Seq(1));
    auto again = p.on_call(Call(2, "cudaMalloc").ptr(kPtr).bytes(300), Seq(2));
    REQUIRE(again.closed.size() == 1);
    CHECK(again.closed[0].end_reason == "superseded");
    CHECK(again.closed[0].free_seq == Seq(2));
    REQUIRE(again.opened.size() == 1);
    CHECK(again.opened[0].alloc_seq == Seq(2));
  }
  SECTION("process_exit: no call ended them") {
    p.on_call(Call(1, "cudaMalloc").ptr(kPtr).bytes(100), Seq(1));
    auto e = p.on_process_exit(100, 5000);
    REQUIRE(e.closed.size() == 1);
    CHECK(e.closed[0].end_reason == "process_exit");
    CHECK_FALSE(e.closed[0].free_seq.has_value());
  }
  SECTION("nested calls have no seq, and a runtime call's allocation takes the runtime call's") {
    // cuMemAlloc_v2 inside cudaMalloc arrives first and is counted by its parent.
    CHECK(nothing(p.on_call(Call(2, "cuMemAlloc_v2").ptr(kPtr).bytes(64).parent(1, "cudaMalloc"), std::nullopt)));
    auto a = p.on_call(Call(1, "cudaMalloc").ptr(kPtr).bytes(64), Seq(4));
    REQUIRE(a.opened.size() == 1);
    CHECK(a.opened[0].alloc_seq == Seq(4));
    // A lazy allocation inside a sync is its own allocation, made by a nested call.
    auto lazy =
        p.on_call(Call(4, "cuMemAlloc_v2").ptr(kPtr + 4096).bytes(64).parent(3, "cudaDeviceSynchronize"), std::nullopt);
    REQUIRE(lazy.opened.size() == 1);
    CHECK_FALSE(lazy.opened[0].alloc_seq.has_value());
    auto f = p.on_call(Call(6, "cuMemFree_v2").ptr(kPtr + 4096).parent(5, "cudaDeviceSynchronize"), std::nullopt);
    REQUIRE(f.closed.size() == 1);
    CHECK_FALSE(f.closed[0].free_seq.has_value());
  }
}

TEST_CASE("pairing: a forwarding stub and the driver call it forwards to are one operation", "[pairing]") {
  // XLA's CUDA plugin exports stubs under the driver's names; the real libcuda call runs
  // nested in each and returns first. The stub's call (its caller, the program) is the operation.
  using Seq = std::optional<std::int64_t>;
  Pairing p;
  const std::string program = "/usr/bin/python3", plugin = "/site-packages/jax_plugins/xla_cuda_plugin.so";
  const std::uint64_t va = 0x7f2000000000, handle = 0x1000, size = 4 << 20;
  auto k = [&](AllocKind kind) { return by_kind(p.totals(), kind); };
  auto no_superseded = [](const PairingOps& ops) {
    for (const auto& c : ops.closed) CHECK(c.end_reason != "superseded");
  };

  CHECK(nothing(p.on_call(Call(2, "cuMemAlloc_v2").ptr(kPtr).bytes(3 << 20).caller(plugin).parent(1, "cuMemAlloc_v2"))));
  auto a = p.on_call(Call(1, "cuMemAlloc_v2").ptr(kPtr).bytes(3 << 20).device(0).caller(program), Seq(1));
  REQUIRE(a.opened.size() == 1);
  CHECK(a.closed.empty());
  CHECK(a.opened[0].alloc_call_id == 1);
  CHECK(a.opened[0].alloc_seq == Seq(1));
  CHECK(a.opened[0].caller == std::optional<std::string>(program));
  CHECK(k(AllocKind::Device) == 3 << 20);
  CHECK(nothing(p.on_call(Call(4, "cuMemFree_v2").ptr(kPtr).caller(plugin).parent(3, "cuMemFree_v2"))));
  CHECK(p.totals().open_count == 1);
  auto f = p.on_call(Call(3, "cuMemFree_v2").ptr(kPtr).caller(program), Seq(2));
  REQUIRE(f.closed.size() == 1);
  CHECK(f.unmatched.empty());
  CHECK(f.closed[0].id == a.opened[0].id);
  CHECK(f.closed[0].end_reason == "freed");
  CHECK(f.closed[0].free_call_id == std::optional<std::int64_t>(3));
  CHECK(k(AllocKind::Device) == 0);

  CHECK(nothing(p.on_call(Call(6, "cuMemAddressReserve").ptr(va).bytes(16 * size).parent(5, "cuMemAddressReserve"))));
  auto r = p.on_call(Call(5, "cuMemAddressReserve").ptr(va).bytes(16 * size).caller(program));
  REQUIRE(r.opened.size() == 1);
  CHECK(r.opened[0].alloc_call_id == 5);
  CHECK(k(AllocKind::VmmReserved) == 16 * size);

  CHECK(nothing(p.on_call(Call(8, "cuMemCreate").handle(handle).bytes(size).device(0).parent(7, "cuMemCreate"))));
  auto c = p.on_call(Call(7, "cuMemCreate").handle(handle).bytes(size).device(0).caller(program));
  no_superseded(c);
  REQUIRE(c.opened.size() == 1);
  CHECK(c.opened[0].alloc_call_id == 7);
  CHECK(c.opened[0].caller == std::optional<std::string>(program));
  CHECK(k(AllocKind::VmmPhysical) == size);
  CHECK(p.totals().device_bytes() == size);

  CHECK(nothing(p.on_call(Call(10, "cuMemMap").ptr(va).bytes(size).handle(handle).parent(9, "cuMemMap"))));
  auto m = p.on_call(Call(9, "cuMemMap").ptr(va).bytes(size).handle(handle).caller(program));
  no_superseded(m);
  REQUIRE(m.opened.size() == 1);
  CHECK(m.opened[0].alloc_call_id == 9);
  CHECK(k(AllocKind::VmmMapped) == size);
  CHECK(nothing(p.on_call(Call(12, "cuMemSetAccess").ptr(va).bytes(size).device(0).parent(11, "cuMemSetAccess"))));
  CHECK(nothing(p.on_call(Call(11, "cuMemSetAccess").ptr(va).bytes(size).device(0))));
  CHECK(p.totals().open_count == 3);

  CHECK(nothing(p.on_call(Call(14, "cuMemUnmap").ptr(va).bytes(size).parent(13, "cuMemUnmap"))));
  CHECK(k(AllocKind::VmmMapped) == size);
  auto u = p.on_call(Call(13, "cuMemUnmap").ptr(va).bytes(size));
  REQUIRE(u.closed.size() == 1);
  CHECK(u.unmatched.empty());
  CHECK(u.closed[0].id == m.opened[0].id);
  CHECK(u.closed[0].free_call_id == std::optional<std::int64_t>(13));

  CHECK(nothing(p.on_call(Call(16, "cuMemRelease").handle(handle).parent(15, "cuMemRelease"))));
  CHECK(k(AllocKind::VmmPhysical) == size);
  auto rel = p.on_call(Call(15, "cuMemRelease").handle(handle));
  REQUIRE(rel.closed.size() == 1);
  CHECK(rel.unmatched.empty());
  CHECK(rel.closed[0].id == c.opened[0].id);

  CHECK(nothing(p.on_call(Call(18, "cuMemAddressFree").ptr(va).bytes(16 * size).parent(17, "cuMemAddressFree"))));
  auto af = p.on_call(Call(17, "cuMemAddressFree").ptr(va).bytes(16 * size));
  REQUIRE(af.closed.size() == 1);
  CHECK(af.unmatched.empty());
  CHECK(af.closed[0].id == r.opened[0].id);
  CHECK(p.totals().open_count == 0);
  for (int i = 0; i < vs::kAllocKindSlots; ++i) CHECK(p.totals().bytes_by_kind[i] == 0);
}

TEST_CASE("pairing: a versioned alias or a runtime forwarded to another runtime is one operation", "[pairing]") {
  Pairing p;
  // cuMemAllocAsync forwarded to its per-thread-stream version, and the free likewise.
  CHECK(nothing(p.on_call(Call(2, "cuMemAllocAsync_ptsz").ptr(kPtr).bytes(512).stream(5).parent(1, "cuMemAllocAsync"))));
  auto a = p.on_call(Call(1, "cuMemAllocAsync").ptr(kPtr).bytes(512).stream(5));
  REQUIRE(a.opened.size() == 1);
  CHECK(a.opened[0].kind == AllocKind::Async);
  CHECK(by_kind(p.totals(), AllocKind::Async) == 512);
  CHECK(nothing(p.on_call(Call(4, "cuMemFreeAsync_ptsz").ptr(kPtr).stream(5).parent(3, "cuMemFreeAsync"))));
  REQUIRE(p.on_call(Call(3, "cuMemFreeAsync").ptr(kPtr).stream(5)).closed.size() == 1);
  // A bundled runtime's cudaMalloc calling libcudart's, which calls the driver: one allocation.
  CHECK(nothing(p.on_call(Call(7, "cuMemAlloc_v2").ptr(kPtr).bytes(64).parent(6, "cudaMalloc"))));
  CHECK(nothing(p.on_call(Call(6, "cudaMalloc").ptr(kPtr).bytes(64).parent(5, "cudaMalloc"))));
  auto b = p.on_call(Call(5, "cudaMalloc").ptr(kPtr).bytes(64));
  REQUIRE(b.opened.size() == 1);
  CHECK(b.opened[0].alloc_call_id == 5);
  CHECK(p.totals().open_count == 1);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 64);
}

TEST_CASE("pairing: a driver call nested in a driver call of another operation is paired itself", "[pairing]") {
  Pairing p;
  // A pool growing its physical memory inside a stream-ordered allocation: two allocations.
  auto c = p.on_call(Call(2, "cuMemCreate").handle(0x1000).bytes(2 << 20).device(0).parent(1, "cuMemAllocAsync"));
  REQUIRE(c.opened.size() == 1);
  CHECK(c.opened[0].kind == AllocKind::VmmPhysical);
  auto a = p.on_call(Call(1, "cuMemAllocAsync").ptr(kPtr).bytes(4096).stream(5));
  REQUIRE(a.opened.size() == 1);
  CHECK(a.closed.empty());
  // The same op, another kind: a managed allocation made inside a device allocation is its own.
  auto m = p.on_call(Call(4, "cuMemAllocManaged").ptr(kPtr + 4096).bytes(128).parent(3, "cuMemAlloc_v2"));
  REQUIRE(m.opened.size() == 1);
  CHECK(m.opened[0].kind == AllocKind::Managed);
  // A release inside a free ends the physical allocation.
  auto rel = p.on_call(Call(6, "cuMemRelease").handle(0x1000).parent(5, "cuMemFreeAsync"));
  REQUIRE(rel.closed.size() == 1);
  CHECK(rel.closed[0].id == c.opened[0].id);
  CHECK(by_kind(p.totals(), AllocKind::VmmPhysical) == 0);
  CHECK(by_kind(p.totals(), AllocKind::Async) == 4096);
  CHECK(by_kind(p.totals(), AllocKind::Managed) == 128);
}

TEST_CASE("pairing: an opened IPC handle is an ipc_mapped allocation until closed, not GPU memory", "[pairing]") {
  Pairing p;
  constexpr std::uint64_t kMapped = 0x7f1000000000, kHandleWord = 0x200000000;
  // The exporter's cudaIpcGetMemHandle is a plain call: no allocation.
  CHECK(nothing(p.on_call(Call(1, "cudaIpcGetMemHandle", 100).ptr(0x200000000).handle(kHandleWord))));
  // The importer (another process) opens it; the driver call nested inside is the same operation.
  CHECK(nothing(p.on_call(Call(2, "cuIpcOpenMemHandle_v2", 200).ptr(kMapped).handle(kHandleWord)
                              .parent(3, "cudaIpcOpenMemHandle"))));
  auto o = p.on_call(Call(3, "cudaIpcOpenMemHandle", 200).ptr(kMapped).handle(kHandleWord).device(0), 7);
  REQUIRE(o.opened.size() == 1);
  CHECK(o.opened[0].kind == AllocKind::IpcMapped);
  CHECK(o.opened[0].pid == 200);
  CHECK(o.opened[0].ptr == kMapped);
  CHECK(o.opened[0].bytes == 0);  // the handle does not carry the size
  CHECK(o.opened[0].handle == std::optional<std::uint64_t>(kHandleWord));
  CHECK(o.opened[0].alloc_seq == std::optional<std::int64_t>(7));
  CHECK(p.totals().open_count == 1);
  CHECK(p.totals().device_bytes() == 0);
  // Opened again: the same pointer, one more reference, no second allocation.
  CHECK(nothing(p.on_call(Call(4, "cudaIpcOpenMemHandle", 200).ptr(kMapped).handle(kHandleWord))));
  CHECK(p.totals().open_count == 1);
  // cudaFree of the mapped pointer ends nothing of it (it fails in CUDA; even a "successful" record does not).
  auto f = p.on_call(Call(5, "cudaFree", 200).ptr(kMapped));
  CHECK(f.closed.empty());
  CHECK(f.unmatched.size() == 1);
  // The first close drops the second reference; the nested driver close is its parent's.
  CHECK(nothing(p.on_call(Call(6, "cuIpcCloseMemHandle", 200).ptr(kMapped).parent(7, "cudaIpcCloseMemHandle"))));
  CHECK(nothing(p.on_call(Call(7, "cudaIpcCloseMemHandle", 200).ptr(kMapped))));
  CHECK(p.totals().open_count == 1);
  auto c = p.on_call(Call(8, "cudaIpcCloseMemHandle", 200).ptr(kMapped), 9);
  REQUIRE(c.closed.size() == 1);
  CHECK(c.closed[0].id == o.opened[0].id);
  CHECK(c.closed[0].end_reason == "freed");
  CHECK(c.closed[0].free_call_id == std::optional<std::int64_t>(8));
  CHECK(c.closed[0].free_seq == std::optional<std::int64_t>(9));
  CHECK(p.totals().open_count == 0);
  // A close with nothing open: unmatched.
  auto u = p.on_call(Call(9, "cuIpcCloseMemHandle", 200).ptr(kMapped));
  REQUIRE(u.unmatched.size() == 1);
  CHECK(u.unmatched[0].ptr == std::optional<std::uint64_t>(kMapped));
}

TEST_CASE("pairing: IPC mappings are their own namespace; one held at exit ends with the process", "[pairing]") {
  Pairing p;
  constexpr std::uint64_t kAddr = 0x7f2000000000;
  p.on_call(Call(1, "cudaMalloc", 100).ptr(kAddr).bytes(4096));
  p.on_call(Call(2, "cuIpcOpenMemHandle", 100).ptr(kAddr + 0x1000).handle(1));
  p.on_call(Call(3, "cuIpcOpenMemHandle_v2", 100).ptr(kAddr + 0x2000).handle(2));
  // A failed open changes nothing.
  CHECK(nothing(p.on_call(Call(4, "cudaIpcOpenMemHandle", 100).ptr(kAddr + 0x3000).ret(400))));
  // An IPC close of the cudaMalloc pointer does not end the device allocation.
  auto wrong = p.on_call(Call(5, "cudaIpcCloseMemHandle", 100).ptr(kAddr));
  CHECK(wrong.closed.empty());
  CHECK(wrong.unmatched.size() == 1);
  CHECK(by_kind(p.totals(), AllocKind::Device) == 4096);
  CHECK(p.totals().open_count == 3);
  CHECK(p.totals().device_bytes() == 4096);
  auto exit = p.on_process_exit(100, 99000);
  REQUIRE(exit.closed.size() == 3);
  for (const auto& c : exit.closed) CHECK(c.end_reason == "process_exit");
  CHECK(p.totals().open_count == 0);
}

TEST_CASE("pairing: registered host memory is host_registered by (pid, ptr), not GPU memory", "[pairing]") {
  Pairing p;
  constexpr std::uint64_t kHost = 0x5555000000;
  // cudaHostRegister -> cuMemHostRegister_v2 nested: one allocation, the runtime call's.
  CHECK(nothing(p.on_call(Call(1, "cuMemHostRegister_v2", 100).ptr(kHost).bytes(3 << 20).parent(2, "cudaHostRegister"))));
  auto r = p.on_call(Call(2, "cudaHostRegister", 100).ptr(kHost).bytes(3 << 20));
  REQUIRE(r.opened.size() == 1);
  CHECK(r.opened[0].kind == AllocKind::HostRegistered);
  CHECK(r.opened[0].bytes == 3u << 20);
  CHECK(by_kind(p.totals(), AllocKind::HostRegistered) == 3u << 20);
  CHECK(p.totals().device_bytes() == 0);
  // Registering again fails: nothing changes.
  CHECK(nothing(p.on_call(Call(3, "cudaHostRegister", 100).ptr(kHost).bytes(3 << 20).ret(712))));
  // cudaFreeHost of the registered address is not an unregistration.
  auto fh = p.on_call(Call(4, "cudaFreeHost", 100).ptr(kHost));
  CHECK(fh.closed.empty());
  CHECK(fh.unmatched.size() == 1);
  auto u = p.on_call(Call(5, "cudaHostUnregister", 100).ptr(kHost));
  REQUIRE(u.closed.size() == 1);
  CHECK(u.closed[0].id == r.opened[0].id);
  CHECK(u.closed[0].end_reason == "freed");
  CHECK(by_kind(p.totals(), AllocKind::HostRegistered) == 0);
  CHECK(p.on_call(Call(6, "cuMemHostUnregister", 100).ptr(kHost)).unmatched.size() == 1);
  // The driver's own registration, held to the exit.
  auto k = p.on_call(Call(7, "cuMemHostRegister_v2", 100).ptr(kHost + 0x100000).bytes(5 << 20));
  REQUIRE(k.opened.size() == 1);
  auto exit = p.on_process_exit(100, 99000);
  REQUIRE(exit.closed.size() == 1);
  CHECK(exit.closed[0].end_reason == "process_exit");
  CHECK(by_kind(p.totals(), AllocKind::HostRegistered) == 0);
}

TEST_CASE("pairing: an imported VMM handle is the importer's vmm_imported allocation until released, not GPU memory",
          "[pairing]") {
  Pairing p;
  constexpr std::uint64_t kCreated = 0x1000, kImported = 0x1001, kFd = 7, kVa = 0x600000000000;
  // The exporter creates 20 MiB and exports it: the export is a recorded call that changes no allocation.
  auto c = p.on_call(Call(1, "cuMemCreate", 100).handle(kCreated).bytes(20 << 20).device(0));
  REQUIRE(c.opened.size() == 1);
  CHECK(nothing(p.on_call(Call(2, "cuMemExportToShareableHandle", 100).handle(kCreated).ptr(kFd))));
  CHECK(p.totals().device_bytes() == 20u << 20);
  // The importer (another process): one allocation keyed by the returned handle, 0 bytes, not GPU memory.
  auto i = p.on_call(Call(3, "cuMemImportFromShareableHandle", 200).handle(kImported).ptr(kFd), 5);
  REQUIRE(i.opened.size() == 1);
  CHECK(i.closed.empty());
  CHECK(i.unmatched.empty());
  const auto& o = i.opened[0];
  CHECK(o.kind == AllocKind::VmmImported);
  CHECK(o.pid == 200);
  CHECK(o.ptr == kImported);  // the handle is the key, as for vmm_physical
  CHECK(o.bytes == 0);        // the size is the exporter's
  CHECK(o.handle == std::optional<std::uint64_t>(kFd));
  CHECK(o.alloc_seq == std::optional<std::int64_t>(5));
  CHECK_FALSE(vs::occupies_gpu_memory(AllocKind::VmmImported));
  CHECK(p.totals().device_bytes() == 20u << 20);  // the exporter's, counted once
  CHECK(p.totals_by_pid().at(200).device_bytes() == 0);
  CHECK(p.totals_by_pid().at(200).open_count == 1);
  // The importer maps the imported handle: a vmm_mapped range that names it, as for a created handle.
  auto m = p.on_call(Call(4, "cuMemMap", 200).ptr(kVa).bytes(20 << 20).handle(kImported).device(0));
  REQUIRE(m.opened.size() == 1);
  CHECK(m.opened[0].kind == AllocKind::VmmMapped);
  CHECK(m.opened[0].handle == std::optional<std::uint64_t>(kImported));
  CHECK(m.unmatched.empty());
  auto u = p.on_call(Call(5, "cuMemUnmap", 200).ptr(kVa).bytes(20 << 20));
  REQUIRE(u.closed.size() == 1);
  CHECK(u.closed[0].id == m.opened[0].id);
  // The importer's release of its handle ends its record: nothing unmatched, nothing superseded.
  auto r = p.on_call(Call(6, "cuMemRelease", 200).handle(kImported), 9);
  CHECK(r.unmatched.empty());
  REQUIRE(r.closed.size() == 1);
  CHECK(r.closed[0].id == o.id);
  CHECK(r.closed[0].end_reason == "freed");
  CHECK(r.closed[0].free_call_id == std::optional<std::int64_t>(6));
  CHECK(r.closed[0].free_seq == std::optional<std::int64_t>(9));
  CHECK(p.totals_by_pid().count(200) == 0);
  // The exporter's memory is untouched by the importer's release; its own release ends it.
  CHECK(p.totals().device_bytes() == 20u << 20);
  auto er = p.on_call(Call(7, "cuMemRelease", 100).handle(kCreated));
  REQUIRE(er.closed.size() == 1);
  CHECK(er.closed[0].id == c.opened[0].id);
  CHECK(p.totals().open_count == 0);
}

TEST_CASE("pairing: a failed import opens nothing; a nested one is its parent's; one held at exit ends with the process",
          "[pairing]") {
  Pairing p;
  constexpr std::uint64_t kHandle = 0x2000;
  // Failed (an fd that is not an exported handle): nothing, and a release of what it wrote is unmatched.
  CHECK(nothing(p.on_call(Call(1, "cuMemImportFromShareableHandle", 200).handle(kHandle).ptr(9).ret(1))));
  CHECK(nothing(p.on_call(Call(2, "cuMemImportFromShareableHandle", 200).handle(kHandle).ptr(9).incomplete())));
  CHECK(p.on_call(Call(3, "cuMemRelease", 200).handle(kHandle)).unmatched.size() == 1);
  // A zero handle back is nothing to pair.
  CHECK(nothing(p.on_call(Call(4, "cuMemImportFromShareableHandle", 200).handle(0).ptr(9))));
  // A stub exported under the driver's name forwards to libcuda's: the nested call is its parent's operation.
  CHECK(nothing(p.on_call(
      Call(5, "cuMemImportFromShareableHandle", 200).handle(kHandle).ptr(9).parent(6, "cuMemImportFromShareableHandle"))));
  auto i = p.on_call(Call(6, "cuMemImportFromShareableHandle", 200).handle(kHandle).ptr(9));
  REQUIRE(i.opened.size() == 1);
  CHECK(i.closed.empty());  // nothing superseded
  // Nested exports change nothing either.
  CHECK(nothing(p.on_call(
      Call(7, "cuMemExportToShareableHandle", 200).handle(kHandle).ptr(11).parent(8, "cuMemExportToShareableHandle"))));
  CHECK(nothing(p.on_call(Call(8, "cuMemExportToShareableHandle", 200).handle(kHandle).ptr(11))));
  // Imported again while open (the same handle back): one more reference, no second allocation, and it takes two
  // releases to end it.
  CHECK(nothing(p.on_call(Call(9, "cuMemImportFromShareableHandle", 200).handle(kHandle).ptr(9))));
  CHECK(p.totals().open_count == 1);
  CHECK(nothing(p.on_call(Call(10, "cuMemRelease", 200).handle(kHandle))));
  CHECK(p.totals().open_count == 1);
  // Held to the end of the process: ended by its exit.
  auto exit = p.on_process_exit(200, 99000);
  REQUIRE(exit.closed.size() == 1);
  CHECK(exit.closed[0].id == i.opened[0].id);
  CHECK(exit.closed[0].end_reason == "process_exit");
  CHECK(p.totals().open_count == 0);
  CHECK(by_kind(p.totals(), AllocKind::VmmImported) == 0);
}

TEST_CASE("pairing: outstanding totals per process (trace_status), superseded and freed included", "[pairing]") {
  Pairing p;
  p.on_call(Call(1, "cudaMalloc", 100).ptr(kPtr).bytes(4096));
  p.on_call(Call(2, "cudaMalloc", 200).ptr(kPtr).bytes(1024));
  p.on_call(Call(3, "cudaMallocHost", 200).ptr(kPtr + 0x10000).bytes(64));
  REQUIRE(p.totals_by_pid().size() == 2);
  CHECK(p.totals_by_pid().at(100).device_bytes() == 4096);
  CHECK(p.totals_by_pid().at(200).device_bytes() == 1024);
  CHECK(by_kind(p.totals_by_pid().at(200), AllocKind::Host) == 64);
  CHECK(p.totals_by_pid().at(200).open_count == 2);
  // A second allocation at the same address supersedes the first: only the new one counts.
  p.on_call(Call(4, "cudaMalloc", 100).ptr(kPtr).bytes(8192));
  CHECK(p.totals_by_pid().at(100).device_bytes() == 8192);
  CHECK(p.totals_by_pid().at(100).open_count == 1);
  // A process holding nothing is no longer listed; the others' totals are untouched.
  p.on_call(Call(5, "cudaFree", 100).ptr(kPtr));
  CHECK(p.totals_by_pid().count(100) == 0);
  CHECK(p.totals_by_pid().at(200).device_bytes() == 1024);
  std::uint64_t sum = 0;
  for (const auto& [pid, t] : p.totals_by_pid()) sum += t.device_bytes();
  CHECK(sum == p.totals().device_bytes());
}
