// vramscope's helper processes: forked children that outlive it or finish its
// work in the background (the guardian below; the closer of perf-event links,
// uprobe_attach.h). A child of a process with other threads may only make
// system calls until it execs, so what they need is prepared before the fork.
#pragma once

#include <vector>

#include "common/result.h"

namespace vs::tracer {

// In a helper process: closes every descriptor but `kept` (sorted, ascending),
// so that it holds no file, pipe, terminal or BPF link of vramscope's.
void close_fds_except(const std::vector<unsigned>& kept);

// The mmap watch stops a process (SIGSTOP) that maps a CUDA library not probed
// yet, and vramscope continues it once the probes are attached. Should vramscope
// die in between (kill -9, a crash), nobody would: the guardian, a child that
// holds `stopped_map_fd` (the BPF map of processes stopped and not continued
// yet) and a pidfd of vramscope, waits for vramscope's end, however it comes,
// then sends SIGCONT to every process left in the map, and exits 0.2 s later.
// It ignores the terminal's signals (Ctrl-C reaches the whole process group).
// Until then it keeps vramscope's memory mappings (the trace's -shm file among
// them), not its descriptors.
Status start_guardian(int stopped_map_fd);

}  // namespace vs::tracer
