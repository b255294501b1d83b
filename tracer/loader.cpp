#include "tracer/loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstring>
#include <set>

#include "common/cuda_api.h"
#include "common/untrusted_text.h"
#include "tracer/elf_symbols.h"
#include "tracer/helper_process.h"
#include "vramscope.skel.h"

// A function of our own to try a uprobe_multi link on: if the kernel accepts
// that link, it accepts the ones on CUDA libraries. Exported to the dynamic
// symbol table (tracer/CMakeLists.txt), so a stripped binary still finds it.
extern "C" __attribute__((noinline, used, visibility("default"))) void vramscope_uprobe_selftest() {
  asm volatile("" ::: "memory");
}

namespace vs::tracer {

static_assert(VS_CALL_WORDS == kCallWords, "events.h and the catalog disagree on a call record's argument words");
static_assert(VS_FOLD_BYTES == kHandleBytes && VS_FOLD_BASIS == kHandleDigestBasis && VS_FOLD_PRIME == kHandleDigestPrime,
              "events.h and the catalog disagree on the IPC handle's digest");
namespace {

int libbpf_log(libbpf_print_level level, const char* fmt, va_list args) {
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof(buf), fmt, args);
  while (n > 0 && n < static_cast<int>(sizeof(buf)) && (buf[n - 1] == '\n')) buf[--n] = 0;
  // libbpf's messages name the probed files: the traced system's paths, escaped.
  if (level == LIBBPF_WARN)
    spdlog::debug("libbpf: {}", escape_untrusted(buf));  // libbpf warns on every probe it retries; details under -v
  else
    spdlog::trace("libbpf: {}", escape_untrusted(buf));
  return 0;
}

std::int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string load_error_advice(int err) {
  // As root, EACCES is the verifier rejecting a program (this kernel's BPF
  // rules differ from the ones vramscope was built for), not a privilege.
  if (err == EACCES && geteuid() == 0)
    return "the kernel's verifier rejected a program; run with -v to see its log, and report it with `uname -r`";
  if (err == EPERM || err == EACCES)
    return "permission denied: tracing needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE); run it with sudo";
  if (err == ENOMEM) return "out of locked memory or map space: lower --ring-mib or raise RLIMIT_MEMLOCK";
  return std::string(std::strerror(err)) + "; run with -v to see libbpf's and the verifier's log";
}

}  // namespace

struct Tracer::Impl {
  TracerOptions options;
  vramscope_bpf* skel = nullptr;
  std::vector<bpf_link*> tracepoint_links;
  UprobeLinks uprobes;
  ring_buffer* rings = nullptr;
  std::set<std::pair<std::uint64_t, std::uint64_t>> attached;
  EventSink* sink = nullptr;
  std::vector<vs_lifecycle_event> pending_lifecycle;

  ~Impl() {
    uprobes.detach_all();
    for (auto* l : tracepoint_links) bpf_link__destroy(l);
    if (rings) ring_buffer__free(rings);
    if (skel) vramscope_bpf__destroy(skel);
  }

  Status load(AttachMode mode) {
    skel = vramscope_bpf__open();
    if (!skel) return Error{"opening the BPF object failed: " + load_error_advice(errno)};
    skel->rodata->cfg_trace_all = options.trace_all ? 1 : 0;
    skel->rodata->cfg_watch_all = options.trace_all ? 1 : 0;
    skel->rodata->cfg_sched_events = options.sched_events ? 1 : 0;
    bpf_map__set_max_entries(skel->maps.calls_rb, options.calls_ring_mib << 20);
    // A 64th of the ring, in call records (a power of two since the ring is).
    skel->rodata->cfg_wakeup_mask =
        std::max<std::uint64_t>((std::uint64_t{options.calls_ring_mib} << 20) / (sizeof(vs_call_event) + 8) / 64, 1) - 1;
    if (!options.sched_events) bpf_map__set_max_entries(skel->maps.sched_rb, static_cast<std::uint32_t>(getpagesize()));
    prepare_uprobe_program(skel->progs.vs_call_entry, mode);
    prepare_uprobe_program(skel->progs.vs_call_return, mode);
    if (int err = vramscope_bpf__load(skel); err != 0)
      return Error{"loading the BPF programs failed: " + load_error_advice(-err)};
    for (const auto& api : all_apis()) {
      vs_api_plan plan{};
      for (int i = 0; i < VS_NREADS; ++i) {
        plan.read_arg[i] = api.reads[i].arg;
        plan.read_size[i] = api.reads[i].size;
        plan.read_off[i] = api.reads[i].offset;
      }
      plan.stack_args = api.stack_args;
      plan.stack_fold = api.stack_digest ? 1 : 0;
      for (int i = 0; i < VS_CALL_WORDS; ++i) plan.word[i] = api.words[i];
      std::uint32_t key = api.id;
      if (bpf_map_update_elem(bpf_map__fd(skel->maps.api_plans), &key, &plan, BPF_ANY) != 0)
        return Error{std::string("filling the API table failed: ") + std::strerror(errno)};
    }
    return Status::success();
  }

  void unload() {
    if (skel) vramscope_bpf__destroy(skel);
    skel = nullptr;
  }

  // Tries one uprobe_multi link on vramscope itself; says why not otherwise.
  Status try_uprobe_multi() {
    auto self = read_elf_functions("/proc/self/exe");
    if (!self) return Error{"cannot read vramscope's own symbols: " + self.error().message};
    auto it = self->offsets.find("vramscope_uprobe_selftest");
    if (it == self->offsets.end())
      return Error{"vramscope_uprobe_selftest is not in vramscope's dynamic symbols (built without tracer/CMakeLists.txt's link option?)"};
    UprobeLinks probe;
    if (Status s = probe.attach(AttachMode::UprobeMulti, skel->progs.vs_call_entry, "/proc/self/exe",
                                {{it->second, 0}}, false);
        !s)
      return Error{"this kernel has no uprobe_multi links (Linux < 6.6?): " + s.message()};
    return Status::success();
  }

  Status attach_tracepoints() {
    bpf_program* progs[] = {skel->progs.vs_sched_switch, skel->progs.vs_sched_wakeup, skel->progs.vs_process_fork,
                            skel->progs.vs_process_exec, skel->progs.vs_process_exit};
    for (auto* p : progs) {
      bpf_link* link = bpf_program__attach(p);
      if (!link)
        return Error{std::string("attaching ") + bpf_program__section_name(p) + " failed: " + std::strerror(errno) +
                     " (needs raw tracepoint support: CONFIG_BPF_EVENTS)"};
      tracepoint_links.push_back(link);
    }
    return attach_mmap_watch();
  }

  // The mmap syscall's tracepoint runs on mmap calls only; the sys_enter
  // hook, on every syscall of the machine (see lifecycle.bpf.c).
  Status attach_mmap_watch() {
    mount_tracefs_if_missing();
    if (bpf_link* link = bpf_program__attach(skel->progs.vs_mmap_enter)) {
      tracepoint_links.push_back(link);
      return Status::success();
    }
    spdlog::info("cannot attach the syscalls:sys_enter_mmap tracepoint ({}): watching mmap from raw_tp/sys_enter, "
                 "which adds ~30 ns to every syscall on this machine while tracing",
                 std::strerror(errno));
    bpf_link* link = bpf_program__attach(skel->progs.vs_sys_enter);
    if (!link)
      return Error{std::string("attaching the mmap watch (raw_tp/sys_enter) failed: ") + std::strerror(errno) +
                   " (needs raw tracepoint support: CONFIG_BPF_EVENTS)"};
    tracepoint_links.push_back(link);
    return Status::success();
  }

  // libbpf finds tracepoint ids in tracefs, which some systems leave unmounted.
  static void mount_tracefs_if_missing() {
    if (access("/sys/kernel/tracing/events", F_OK) == 0 || access("/sys/kernel/debug/tracing/events", F_OK) == 0)
      return;
    if (mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, nullptr) == 0)
      spdlog::info("mounted tracefs at /sys/kernel/tracing (to attach the syscalls:sys_enter_mmap tracepoint)");
    else
      spdlog::debug("mounting tracefs at /sys/kernel/tracing failed: {}", std::strerror(errno));
  }

  Status make_rings() {
    auto on_call = [](void* ctx, void* data, size_t size) -> int {
      auto* self = static_cast<Impl*>(ctx);
      if (size < sizeof(vs_u32)) return 0;
      vs_u32 type;
      std::memcpy(&type, data, sizeof type);
      if (type == VS_REC_CALL && size >= sizeof(vs_call_event)) {
        self->sink->on_call(*static_cast<const vs_call_event*>(data), nullptr);
      } else if (type == VS_REC_CALL_SCHED && size >= sizeof(vs_call_sched_event)) {
        const auto* ev = static_cast<const vs_call_sched_event*>(data);
        self->sink->on_call(ev->call, &ev->sched);
      }
      else if (type == VS_REC_OBJECT && size >= sizeof(vs_object_event))
        self->sink->on_object(*static_cast<const vs_object_event*>(data));
      return 0;
    };
    auto on_lifecycle = [](void* ctx, void* data, size_t size) -> int {
      auto* self = static_cast<Impl*>(ctx);
      if (size >= sizeof(vs_lifecycle_event))
        self->pending_lifecycle.push_back(*static_cast<const vs_lifecycle_event*>(data));
      return 0;
    };
    auto on_sched = [](void* ctx, void* data, size_t size) -> int {
      auto* self = static_cast<Impl*>(ctx);
      if (size >= sizeof(vs_sched_event)) self->sink->on_sched(*static_cast<const vs_sched_event*>(data));
      return 0;
    };
    rings = ring_buffer__new(bpf_map__fd(skel->maps.calls_rb), on_call, this, nullptr);
    if (!rings) return Error{std::string("creating the call ring buffer failed: ") + std::strerror(errno)};
    if (ring_buffer__add(rings, bpf_map__fd(skel->maps.lifecycle_rb), on_lifecycle, this) != 0 ||
        ring_buffer__add(rings, bpf_map__fd(skel->maps.sched_rb), on_sched, this) != 0)
      return Error{std::string("adding ring buffers failed: ") + std::strerror(errno)};
    return Status::success();
  }
};

Tracer::~Tracer() = default;

Result<std::unique_ptr<Tracer>> Tracer::open(const TracerOptions& options) {
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
    return Error{"this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): vramscope needs a kernel built "
                 "with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2021)"};
  if (geteuid() != 0)
    spdlog::warn("not running as root: loading BPF programs needs root or CAP_BPF+CAP_PERFMON+CAP_SYS_RESOURCE");
  libbpf_set_print(libbpf_log);

  std::unique_ptr<Tracer> t(new Tracer());
  t->impl_ = std::make_unique<Impl>();
  Impl& im = *t->impl_;
  im.options = options;

  Status multi = options.perf_links ? Status(Error{"--perf-links"}) : im.load(AttachMode::UprobeMulti);
  if (multi) multi = im.try_uprobe_multi();
  if (multi) {
    t->mode_ = AttachMode::UprobeMulti;
  } else {
    spdlog::info("{}: using one perf-event link per probe, which is slower to attach and detach (~0.1 s a probe, "
                 "closed in the background after the session)",
                 multi.message());
    im.unload();
    if (Status s2 = im.load(AttachMode::Perf); !s2) return Error{s2.message()};
    t->mode_ = AttachMode::Perf;
  }
  // Before the mmap watch can stop anything.
  if (Status s = start_guardian(bpf_map__fd(im.skel->maps.stopped)); !s) return Error{s.message()};
  if (Status s = im.attach_tracepoints(); !s) return Error{s.message()};
  if (Status s = im.make_rings(); !s) return Error{s.message()};
  return t;
}

bool Tracer::is_attached(std::uint64_t dev, std::uint64_t ino) const {
  return impl_->attached.count({dev, ino}) > 0;
}

void Tracer::mark_known_file(std::uint32_t kernel_dev, std::uint64_t ino) {
  vs_file_key key{};
  key.dev = kernel_dev;
  key.ino = ino;
  std::uint8_t one = 1;
  if (bpf_map_update_elem(bpf_map__fd(impl_->skel->maps.known_files), &key, &one, BPF_ANY) != 0)
    spdlog::debug("known_files update failed: {}", std::strerror(errno));
}

void Tracer::resume(std::uint32_t pid) {
  kill(static_cast<pid_t>(pid), SIGCONT);
  if (bpf_map_delete_elem(bpf_map__fd(impl_->skel->maps.stopped), &pid) != 0)
    spdlog::debug("stopped-process map: removing pid {} failed: {}", pid, std::strerror(errno));
}

AttachResult Tracer::attach_library(const LibraryCandidate& lib) {
  AttachResult r;
  auto& rec = r.library;
  rec.path = lib.path;
  rec.kind = lib.kind;
  rec.found_by = lib.found_by;
  rec.dev = static_cast<std::int64_t>(lib.dev);
  rec.inode = static_cast<std::int64_t>(lib.ino);
  if (lib.pid) rec.pid = *lib.pid;

  auto fns = read_elf_functions(lib.open_path);
  if (!fns) {
    rec.error = fns.error().message;
    return r;
  }
  std::vector<UprobeSite> sites;
  for (const auto& api : all_apis()) {
    vs::ProbeRecord probe;
    probe.api = std::string(api.name);
    auto it = fns->offsets.find(std::string(api.name));
    if (it == fns->offsets.end()) {
      probe.status = "missing";
      ++rec.probes_missing;
    } else {
      probe.offset = static_cast<std::int64_t>(it->second);
      if (api.launch && !impl_->options.launches) {
        probe.status = "disabled";
      } else {
        probe.status = "attached";
        sites.push_back({it->second, api.id});
      }
    }
    r.probes.push_back(std::move(probe));
  }
  if (sites.empty()) {
    rec.error = "exports none of the traced CUDA functions";
    return r;
  }
  // Returns first: a return without its entry is ignored, an entry without
  // its return would leave the thread's call stack unbalanced.
  Status s = impl_->uprobes.attach(mode_, impl_->skel->progs.vs_call_return, lib.open_path, sites, true);
  if (s) s = impl_->uprobes.attach(mode_, impl_->skel->progs.vs_call_entry, lib.open_path, sites, false);
  if (!s) {
    rec.error = s.message();
    for (auto& p : r.probes)
      if (p.status == "attached") {
        p.status = "failed";
        p.error = s.message();
      }
    return r;
  }
  rec.attach_mode = attach_mode_name(mode_);
  rec.probes_attached = static_cast<int>(sites.size());
  rec.attached_ts_ns = monotonic_ns();
  impl_->attached.insert({lib.dev, lib.ino});
  mark_known_file(static_cast<std::uint32_t>((major(lib.dev) << 20) | minor(lib.dev)), lib.ino);
  return r;
}

Status Tracer::trace_pid(std::uint32_t pid) {
  std::uint8_t one = 1;
  if (bpf_map_update_elem(bpf_map__fd(impl_->skel->maps.traced), &pid, &one, BPF_ANY) != 0)
    return Error{"cannot trace pid " + std::to_string(pid) + ": " + std::strerror(errno)};
  return Status::success();
}

Status Tracer::poll(int timeout_ms, EventSink& sink) {
  Impl& im = *impl_;
  im.sink = &sink;
  int n = ring_buffer__poll(im.rings, timeout_ms);
  // Call records wake the reader only every cfg_wakeup_mask + 1 records (a 64th of the
  // ring): the others wait in the ring until a wakeup. A quiet poll (a timeout, or a
  // stop) collects them, so a record reaches the sink within one poll timeout, and a
  // process that makes a few calls and then waits (or a trace stopped mid-run) loses none.
  if (n == 0) n = ring_buffer__consume(im.rings);
  if (n < 0 && n != -EINTR) return Error{std::string("reading the ring buffers failed: ") + std::strerror(-n)};
  // Lifecycle records (an exit, say) go out only after the call records
  // submitted before them, which one more pass over the rings collects.
  std::vector<vs_lifecycle_event> ready;
  ready.swap(im.pending_lifecycle);
  if (!ready.empty()) ring_buffer__consume(im.rings);
  for (const auto& ev : ready) sink.on_lifecycle(ev);
  return Status::success();
}

TracerCounters Tracer::counters() const {
  TracerCounters c;
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return c;
  std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
  for (std::uint32_t k = 0; k < VS_STAT_COUNT; ++k) {
    if (bpf_map_lookup_elem(bpf_map__fd(impl_->skel->maps.stats), &k, per_cpu.data()) != 0) continue;
    for (auto v : per_cpu) c.values[k] += v;
  }
  return c;
}

double Tracer::detach_uprobes() {
  auto t0 = std::chrono::steady_clock::now();
  if (mode_ == AttachMode::Perf)
    impl_->skel->bss->probes_off = 1;  // closing the links waits for finish_detach
  else
    impl_->uprobes.detach_all();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void Tracer::finish_detach() { impl_->uprobes.close_in_background(); }

}  // namespace vs::tracer
