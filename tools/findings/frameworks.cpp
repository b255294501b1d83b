#include "tools/findings/frameworks.h"

namespace vs::tools::findings {
namespace {

// The markers are path parts that only the allocator's own library has: PyTorch's allocator is in libc10_cuda;
// JAX's XLA runs in its CUDA plugin (jax_plugins/xla_cuda13/xla_cuda_plugin.so) or, in older jaxlib, in
// xla_extension; CuPy calls the runtime from its Cython modules under cupy_backends/ and cupy/.
constexpr FrameworkAllocator kAllocators[] = {
    {"PyTorch's caching allocator", "libc10_cuda", "tensors", "torch.cuda.empty_cache()",
     "torch.cuda.memory_allocated() (torch.cuda.memory_reserved() is what it holds)",
     "PYTORCH_CUDA_ALLOC_CONF (expandable_segments:True, max_split_size_mb, garbage_collection_threshold)"},
    {"XLA's BFC allocator (JAX)", "xla_cuda_plugin|xla_extension|/jaxlib/|/jax_plugins/", "arrays",
     "nothing returns XLA's pool while the process runs: deleted arrays go back into the pool, not to CUDA",
     "jax.devices()[0].memory_stats()['bytes_in_use'] (pool_bytes is what it holds)",
     "XLA_PYTHON_CLIENT_PREALLOCATE=false (grow on demand instead of taking 75% of the GPU at start), "
     "XLA_PYTHON_CLIENT_MEM_FRACTION (the share taken at start), XLA_PYTHON_CLIENT_ALLOCATOR=platform "
     "(allocate and free exactly what is needed, slower)"},
    {"TensorFlow's BFC allocator", "libtensorflow_framework|_pywrap_tensorflow", "tensors",
     "nothing returns TensorFlow's pool while the process runs",
     "tf.config.experimental.get_memory_info('GPU:0')['current']",
     "tf.config.experimental.set_memory_growth(gpu, True) or TF_FORCE_GPU_ALLOW_GROWTH=true (grow on demand "
     "instead of taking nearly all of the GPU at start), a memory_limit with "
     "tf.config.set_logical_device_configuration"},
    {"CuPy's memory pool", "/cupy_backends/|/cupy/", "arrays", "cupy.get_default_memory_pool().free_all_blocks()",
     "cupy.get_default_memory_pool().used_bytes() (total_bytes() is what it holds)",
     "MemoryPool.set_limit(size=...) or CUPY_GPU_MEMORY_LIMIT, cupy.cuda.set_allocator(None) (no pool)"},
    {"RAPIDS' RMM pool", "librmm|/rmm/", "buffers",
     "a pool memory resource keeps what it took until it is destroyed (rmm.reinitialize())",
     "rmm.statistics (with statistics enabled)",
     "rmm.reinitialize(pool_allocator=..., initial_pool_size=..., maximum_pool_size=...)"},
};

bool has_marker(std::string_view path, std::string_view markers) {
  while (!markers.empty()) {
    const std::size_t bar = markers.find('|');
    if (path.find(markers.substr(0, bar)) != std::string_view::npos) return true;
    markers = bar == std::string_view::npos ? std::string_view() : markers.substr(bar + 1);
  }
  return false;
}

}  // namespace

const FrameworkAllocator* framework_of(std::string_view caller_path) {
  for (const FrameworkAllocator& a : kAllocators)
    if (has_marker(caller_path, a.markers)) return &a;
  return nullptr;
}

std::span<const FrameworkAllocator> framework_allocators() { return kAllocators; }

}  // namespace vs::tools::findings
