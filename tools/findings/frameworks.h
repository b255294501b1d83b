// Framework allocators, recognized by the library that makes their CUDA
// calls (a caller is the file its return address lies in): PyTorch's caching
// allocator, XLA's BFC allocator (JAX, TensorFlow), CuPy's memory pool and
// RAPIDS' RMM. Each one caches GPU memory it got from CUDA and serves the
// program's arrays from it, so nvidia-smi and the program's own numbers
// disagree; each has its own call that returns the cache and its own
// settings. The findings name the allocator and say those, never PyTorch's
// for another framework's memory.
#pragma once

#include <span>
#include <string_view>

namespace vs::tools::findings {

struct FrameworkAllocator {
  std::string_view name;      // "PyTorch's caching allocator"
  std::string_view markers;   // '|'-separated substrings of the calling library's path
  std::string_view objects;   // what it serves from its cache: "tensors", "arrays"
  std::string_view release;   // the call that returns the cached part, or how to get it back
  std::string_view live;      // how the program reads the part in use
  std::string_view settings;  // the settings that change how much it takes and keeps
};

// The allocator whose library is at `caller_path`, or nullptr when it is none of them.
const FrameworkAllocator* framework_of(std::string_view caller_path);

// Every framework allocator known, in the order of framework_of's search.
std::span<const FrameworkAllocator> framework_allocators();

}  // namespace vs::tools::findings
