// Library discovery parsing, and the API catalog's decoding of raw registers.
#include <sys/stat.h>

#include <array>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>

#include "common/cuda_api.h"
#include "tracer/discovery.h"

using namespace vs;
using namespace vs::tracer;

TEST_CASE("parse_maps_line", "[discovery]") {
  auto e = parse_maps_line("7f12a0000000-7f12a0200000 r-xp 00010000 fd:01 1234567   /opt/venv/lib/libcudart.so.13");
  REQUIRE(e);
  CHECK(e->start == 0x7f12a0000000);
  CHECK(e->end == 0x7f12a0200000);
  CHECK(e->perms == "r-xp");
  CHECK(e->offset == 0x10000);
  CHECK(e->dev_major == 0xfd);
  CHECK(e->dev_minor == 0x01);
  CHECK(e->inode == 1234567);
  CHECK(e->path == "/opt/venv/lib/libcudart.so.13");

  auto spaces = parse_maps_line("00400000-00401000 r--p 00000000 08:02 42 /tmp/my dir/work load (deleted)");
  REQUIRE(spaces);
  CHECK(spaces->path == "/tmp/my dir/work load (deleted)");

  auto anon = parse_maps_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0");
  REQUIRE(anon);
  CHECK(anon->inode == 0);
  CHECK(anon->path.empty());

  CHECK_FALSE(parse_maps_line("garbage"));
}

TEST_CASE("parse_ldconfig_output keeps the CUDA runtime and driver", "[discovery]") {
  const std::string text =
      "1234 libs found in cache `/etc/ld.so.cache'\n"
      "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n"
      "\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.13\n"
      "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n"
      "\tlibcudnn.so.9 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so.9\n";
  auto paths = parse_ldconfig_output(text);
  CHECK(paths == std::vector<std::string>{"/usr/local/cuda/lib64/libcudart.so.13", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"});
}

TEST_CASE("kind_from_filename", "[discovery]") {
  CHECK(kind_from_filename("/x/libcudart.so.13.0.96") == "runtime");
  CHECK(kind_from_filename("/x/libcudart.so") == "runtime");
  CHECK(kind_from_filename("/usr/local/nvidia/lib64/libcuda.so.580.159.04") == "driver");
  CHECK(kind_from_filename("/x/libcudnn.so.9").empty());
  CHECK(kind_from_filename("/x/libcudart_static.a").empty());
}

TEST_CASE("classify_file: fixtures, link stubs and static runtimes", "[discovery]") {
  const std::string fx = VS_FIXTURE_DIR;
  auto rt = classify_file(fx + "/libcudart.so", "cuda-lib", true);  // a symlink: resolved
  REQUIRE(rt);
  CHECK(rt->kind == "runtime");
  CHECK(rt->path == std::filesystem::canonical(fx + "/libcudart.so.13").string());
  auto st = classify_file(fx + "/workload_static", "executable", true);
  REQUIRE(st);
  CHECK(st->kind == "static");
  CHECK_FALSE(classify_file(fx + "/workload", "executable", true));  // uses the shared runtime
  CHECK_FALSE(classify_file("/nonexistent/libcudart.so.13", "cuda-lib", true));

  // A link-time stub is never probed.
  auto dir = std::filesystem::temp_directory_path() / "vs-stub-test" / "stubs";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(fx + "/libcuda.so.1", dir / "libcuda.so", std::filesystem::copy_options::overwrite_existing);
  CHECK_FALSE(classify_file((dir / "libcuda.so").string(), "search-path", false));
}

TEST_CASE("wheel_lib_dirs finds pip's nvidia/*/lib under a prefix", "[discovery]") {
  auto prefix = std::filesystem::temp_directory_path() / "vs-venv-test";
  std::filesystem::remove_all(prefix);
  std::filesystem::create_directories(prefix / "lib/python3.12/site-packages/nvidia/cu13/lib");
  std::filesystem::create_directories(prefix / "lib/python3.12/site-packages/nvidia/cudnn/lib");
  auto dirs = wheel_lib_dirs(prefix.string());
  CHECK(dirs.size() == 2);
  CHECK(std::count(dirs.begin(), dirs.end(), (prefix / "lib/python3.12/site-packages/nvidia/cu13/lib").string()) == 1);
}

TEST_CASE("the API catalog: unique ids and names, lookups", "[catalog]") {
  std::set<std::uint16_t> ids;
  std::set<std::string_view> names;
  for (const auto& api : all_apis()) {
    CHECK(ids.insert(api.id).second);
    CHECK(names.insert(api.name).second);
    CHECK(find_api(api.id) == &api);
    CHECK(find_api(api.name) == &api);
    CHECK(api.id < 128);  // VS_MAX_APIS on the BPF side
  }
  CHECK(find_api(std::uint16_t{0}) == nullptr);
  CHECK(find_api("cudaNotAFunction") == nullptr);
}

namespace {
// What the BPF side sends for a call whose argument words (6 registers, then
// 3 stack words) are `arg`: the words the API's plan names (vs_fill_call).
struct CallArgs {
  std::uint64_t arg[9];
  std::uint64_t out[2];
  RawCallValues record(const ApiInfo& api) const {
    RawCallValues raw;
    for (int i = 0; i < kCallWords; ++i) raw.words[i] = api.words[i] >= 0 ? arg[api.words[i]] : 0;
    raw.out[0] = out[0];
    raw.out[1] = out[1];
    return raw;
  }
};
}  // namespace

TEST_CASE("decode_call: where each column comes from", "[catalog]") {
  CallArgs call{{100, 101, 102, 103, 104, 105, 200, 201, 202}, {300, 301}};
  auto decode = [&](const char* name) { return decode_call(*find_api(name), call.record(*find_api(name))); };

  auto d = decode("cudaMalloc");  // (void** out, size)
  CHECK(d.ptr == 300u);
  CHECK(d.bytes == 101u);
  CHECK_FALSE(d.stream);

  d = decode("cudaMallocPitch");  // bytes = pitch (read back) x height (A3)
  CHECK(d.bytes == 301u * 103u);

  d = decode("cudaMemcpyAsync");  // (dst, src, count, kind, stream)
  CHECK(d.bytes == 102u);
  CHECK(d.stream == 104u);

  d = decode("cudaLaunchKernel");  // stream is the 8th word: two dim3 take 4 registers
  CHECK(d.stream == 201u);
  d = decode("cuLaunchKernel");  // stream is the 9th argument
  CHECK(d.stream == 202u);

  d = decode("cuMemCreate");  // handle read back; device from prop->location.id
  CHECK(d.handle == 300u);
  CHECK(d.device == 301);
  CHECK(d.bytes == 101u);

  d = decode("cuMemMap");  // (ptr, size, offset, handle, flags)
  CHECK(d.ptr == 100u);
  CHECK(d.bytes == 101u);
  CHECK(d.handle == 103u);

  call.arg[0] = 0xffffffffu;  // cudaSetDevice(int): the register's low 32 bits, signed
  d = decode("cudaSetDevice");
  CHECK(d.device == -1);
}

TEST_CASE("decode_call: IPC, host registration, the pool's attributes, graphs", "[catalog]") {
  CallArgs call{{100, 101, 102, 103, 104, 105, 200, 201, 202}, {300, 301}};
  auto decode = [&](const char* name) { return decode_call(*find_api(name), call.record(*find_api(name))); };
  for (const char* name : {"cudaIpcOpenMemHandle", "cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle"}) {
    // (void** out, handle by value in memory, flags): the first stack word holds the digest of the 64 bytes there,
    // folded at entry (the plan's stack_fold); the pointer is read back as 8 bytes.
    const ApiInfo* api = find_api(name);
    CHECK(api->stack_args == 1);
    CHECK(api->stack_digest);
    CHECK(api->reads[0].size == 8);
    auto d = decode(name);
    CHECK(d.ptr == 300u);
    CHECK(d.handle == 200u);
    CHECK_FALSE(d.bytes);
  }
  for (const char* name : {"cudaIpcGetMemHandle", "cuIpcGetMemHandle"}) {
    // (handle* out, devPtr): the 64 bytes written through A0 read back folded into their digest (out[0])
    const ApiInfo* api = find_api(name);
    CHECK(api->reads[0].arg == 0);
    CHECK(api->reads[0].size == kHandleBytes);
    CHECK(api->reads[0].offset == 0);
    CHECK_FALSE(api->stack_digest);
    auto d = decode(name);
    CHECK(d.ptr == 101u);
    CHECK(d.handle == 300u);
  }
  // No other API folds: every other read is 1 to 8 bytes, and no other takes a handle by value.
  for (const auto& api : all_apis()) {
    if (api.op == Op::IpcGetHandle || api.op == Op::IpcOpen) continue;
    CHECK_FALSE(api.stack_digest);
    for (const ReturnRead& r : api.reads)
      if (r.arg >= 0) CHECK((r.size >= 1 && r.size <= 8));
  }
  auto d = decode("cudaIpcCloseMemHandle");
  CHECK(d.ptr == 100u);
  d = decode("cuMemHostRegister_v2");  // (p, bytesize, flags)
  CHECK(d.ptr == 100u);
  CHECK(d.bytes == 101u);
  d = decode("cudaDeviceGetDefaultMemPool");  // (pool* out, device)
  CHECK(d.handle == 300u);
  CHECK(d.device == 101);
  d = decode("cudaMemPoolTrimTo");  // (pool, minBytesToKeep)
  CHECK(d.handle == 100u);
  CHECK(d.bytes == 101u);
  // (pool, attr, value*): a 64-bit attribute's value is the 8-byte read, an int's the 4-byte one.
  call.arg[1] = 5;  // cudaMemPoolAttrReservedMemCurrent
  call.out[0] = 0x11111111;
  call.out[1] = 0x2222222211111111;
  for (const char* name : {"cudaMemPoolGetAttribute", "cuMemPoolGetAttribute", "cudaMemPoolSetAttribute"}) {
    d = decode(name);
    CHECK(d.handle == 100u);
    CHECK(d.ptr == 5u);
    CHECK(d.bytes == 0x2222222211111111u);
  }
  call.arg[1] = 2;  // cudaMemPoolReuseAllowOpportunistic, an int
  d = decode("cudaMemPoolGetAttribute");
  CHECK(d.bytes == 0x11111111u);
  call.arg[1] = 101;
  call.out[0] = 300;
  d = decode("cudaGraphInstantiateWithFlags");  // (exec* out, graph, flags)
  CHECK(d.handle == 300u);
  CHECK(d.ptr == 101u);
  d = decode("cuGraphLaunch");  // (exec, stream)
  CHECK(d.handle == 100u);
  CHECK(d.stream == 101u);
  d = decode("cudaGraphExecDestroy");
  CHECK(d.handle == 100u);
}

TEST_CASE("handle_digest: FNV-1a over a CUDA IPC handle's 8 little-endian words", "[catalog]") {
  std::array<std::uint8_t, kHandleBytes> h{};
  // Expected values computed apart (Python): h = 0xcbf29ce484222325; h = (h ^ w) * 0x100000001b3 mod 2^64.
  CHECK(handle_digest(h) == 0xa8c7f832281a39c5u);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint8_t>(i);
  CHECK(handle_digest(h) == 0x5469d9a4adff6165u);  // words read little-endian: 0x0706050403020100 first
  static_assert(handle_digest(std::array<std::uint8_t, kHandleBytes>{}) == 0xa8c7f832281a39c5u);
  // Handles that share their first 8 bytes (as every handle one process exports does on the real driver) and
  // differ at any one other byte have different digests: each word goes through a bijection of the state.
  std::array<std::uint8_t, kHandleBytes> base{'f', 'a', 'k', 'e', 'i', 'p', 'c', 0};
  const std::uint64_t base_digest = handle_digest(base);
  for (std::size_t i = 0; i < base.size(); ++i) {
    auto other = base;
    other[i] ^= 0x01;
    INFO("byte " << i);
    CHECK(handle_digest(other) != base_digest);
  }
}

TEST_CASE("decode_call: VMM handles shared between processes (export, import)", "[catalog]") {
  CallArgs call{{100, 101, 102, 103, 104, 105, 200, 201, 202}, {7, 301}};
  auto decode = [&](const char* name) { return decode_call(*find_api(name), call.record(*find_api(name))); };
  // cuMemExportToShareableHandle(void* shareableHandle, handle, handleType, flags): handle = the exported handle,
  // ptr = the file descriptor written back (4 bytes); no size.
  const ApiInfo* exp = find_api("cuMemExportToShareableHandle");
  REQUIRE(exp != nullptr);
  CHECK(exp->layer == Layer::Driver);
  CHECK(op_name(exp->op) == "vmm_export");
  CHECK(exp->reads[0].arg == 0);
  CHECK(exp->reads[0].size == 4);
  auto d = decode("cuMemExportToShareableHandle");
  CHECK(d.handle == 101u);
  CHECK(d.ptr == 7u);
  CHECK_FALSE(d.bytes);
  CHECK_FALSE(d.device);
  // cuMemImportFromShareableHandle(handle* out, void* osHandle, type): handle read back (8 bytes), ptr = osHandle
  // (the fd as a pointer); no size: the exporter's.
  const ApiInfo* imp = find_api("cuMemImportFromShareableHandle");
  REQUIRE(imp != nullptr);
  CHECK(op_name(imp->op) == "vmm_import");
  CHECK(imp->kind == AllocKind::VmmImported);
  CHECK(imp->reads[0].arg == 0);
  CHECK(imp->reads[0].size == 8);
  call.out[0] = 0x1001;
  d = decode("cuMemImportFromShareableHandle");
  CHECK(d.handle == 0x1001u);
  CHECK(d.ptr == 101u);
  CHECK_FALSE(d.bytes);
  // Appended after every earlier API: the ids trace files hold keep their names.
  CHECK(exp->id > find_api("cuGraphExecDestroy")->id);
  CHECK(imp->id == exp->id + 1);
}
