// minitensor._C: the pybind11 module. Kernels live in their own files; this file only binds them.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

static const char* isa_path() {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
    return "scalar";
}

PYBIND11_MODULE(_C, m) {
    m.doc() = "minitensor's C++ kernels";
    m.def("info", []() {
        py::dict d;
        d["isa"] = isa_path();
#ifdef _OPENMP
        d["openmp"] = true;
        d["threads"] = omp_get_max_threads();
#else
        d["openmp"] = false;
        d["threads"] = 1;
#endif
        return d;
    });
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw py::value_error("set_num_threads: expected a positive thread count");
#ifdef _OPENMP
        omp_set_num_threads(n);
#endif
    });
    m.def("get_num_threads", []() {
#ifdef _OPENMP
        return omp_get_max_threads();
#else
        return 1;
#endif
    });
}
