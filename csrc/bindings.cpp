// minitensor._C: the pybind11 module. The kernels live in their own files; this file detects the ISA and
// binds everything. The only global state is OpenMP's thread count (set_num_threads / OMP_NUM_THREADS) and whether
// this process is a fork()ed child (kernels then run on one thread: see in_forked_child in common.h).
#include <cstdlib>
#include <stdexcept>
#include <string>
#include "common.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define MT_HAVE_ATFORK 1
#else
#define MT_HAVE_ATFORK 0
#endif
#include "gemm.h"

namespace mt {

void register_softmax(py::module_& m);
void register_layernorm(py::module_& m);
void register_conv(py::module_& m);
void register_elementwise(py::module_& m);
void register_lstm(py::module_& m);
void register_attention(py::module_& m);

Isa cpu_isa() {
    static const Isa isa = [] {
#if MT_X86
        __builtin_cpu_init();
        Isa best = Isa::scalar;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) best = Isa::avx512;
        return best;
#else
        return Isa::scalar;
#endif
    }();
    return isa;
}

Isa detected_isa() {
    static const Isa isa = [] {
        Isa best = cpu_isa();
        // MINITENSOR_ISA caps the path (reproduce another machine's arithmetic, compare paths); it never raises the
        // path above the CPU's. The Python package validates the value at import (an invalid one stops every
        // kernel until set_backend() is called; after that it is no cap here).
        if (const char* cap = std::getenv("MINITENSOR_ISA")) {
            const std::string c(cap);
            const Isa want = c == "scalar" ? Isa::scalar : c == "avx2" ? Isa::avx2 : Isa::avx512;
            if (static_cast<int>(want) < static_cast<int>(best)) best = want;
        }
        return best;
    }();
    return isa;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "scalar";
    }
}

}  // namespace mt

// Keep freed memory for reuse instead of handing it back to the OS at once (glibc malloc). Training frees and
// reallocates the same few-MiB activations every step; by default glibc returns big freed blocks to the OS and
// the next step takes a page fault (a zeroed 4 KiB page) per page again: ~25,000 faults per ViT-small step, 10%
// of its time, and the threads of a parallel kernel fault in turn. With blocks up to 32 MiB served from the heap
// and up to 256 MiB of free heap kept, the pages stay mapped: a steady process holds about its peak, as caching
// allocators do. Process-wide (numpy's arrays too); MINITENSOR_MALLOC=default leaves glibc alone.
static bool tune_malloc() {
#ifdef __GLIBC__
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1;
#else
    return false;
#endif
}

#if MT_HAVE_ATFORK
// Runs in the child inside fork(), before fork() returns there (only async-signal-safe work would be strictly
// allowed; glibc has already reset malloc's locks by then, and omp_set_num_threads only stores the count).
static void single_thread_after_fork() {
    mt::in_forked_child() = true;
#ifdef _OPENMP
    omp_set_num_threads(1);  // the forking thread's own count: OpenMP code outside minitensor also stays serial
#endif
}
#endif

PYBIND11_MODULE(_C, m) {
#if MT_HAVE_ATFORK
    // A module initialises once per process, so the handler is registered once; a child forked before _C was
    // loaded has no handler, and needs none (minitensor started no OpenMP threads there).
    pthread_atfork(nullptr, nullptr, single_thread_after_fork);
#endif
    using namespace mt;
    m.doc() = "minitensor's C++ kernels: GEMM, softmax, layer_norm, im2col/col2im/conv2d, erf/gelu, the fused LSTM cell";
    m.def("info", []() {
        py::dict d;
        d["isa"] = isa_name(detected_isa());
        py::list supported;
        // what the CPU can run (an explicit isa= argument may pick any of these), whatever the cap chose above
        for (int i = 0; i <= static_cast<int>(cpu_isa()); ++i) supported.append(isa_name(static_cast<Isa>(i)));
        d["isa_supported"] = supported;
#ifdef _OPENMP
        d["openmp"] = true;
#else
        d["openmp"] = false;
#endif
        d["threads"] = max_threads();
        return d;
    });
    m.def("set_num_threads", [](int n) {
        if (n < 1) value_error("set_num_threads: expected a positive thread count, got " + std::to_string(n));
        // An error rather than a warning: the caller asked for parallel kernels and cannot have them here, and
        // a count that get_num_threads() would not report back is a silent surprise (a hang, before this check).
        if (n > 1 && in_forked_child())
            throw std::runtime_error("set_num_threads(" + std::to_string(n) +
                                     "): this process is a fork() child of one that loaded minitensor, and OpenMP's "
                                     "thread pool does not survive fork(), so kernels here run on 1 thread; start "
                                     "worker processes with the 'spawn' or 'forkserver' method to use more threads");
#ifdef _OPENMP
        omp_set_num_threads(n);
#endif
    });
    m.def("get_num_threads", []() { return max_threads(); });
    m.def("tune_malloc", &tune_malloc,
          "Keep freed memory mapped for reuse (glibc: mmap threshold 32 MiB, trim threshold 256 MiB); "
          "returns whether it applied.");
    register_gemm(m);
    register_softmax(m);
    register_layernorm(m);
    register_conv(m);
    register_elementwise(m);
    register_lstm(m);
    register_attention(m);
}
