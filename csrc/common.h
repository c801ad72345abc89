// Shared helpers for minitensor's kernels: ISA detection, OpenMP helpers, checked access to numpy arrays.
//
// Every kernel entry point validates what Python hands it (dtype, ndim, shapes, contiguity, writeability)
// before touching memory, raising ValueError/TypeError that name the op and the shapes; then it releases
// the GIL and runs. Kernels never read or write outside the arrays they were given.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr (FlushSubnormals)
#endif

namespace mt {

using index_t = int64_t;

#define MT_ALWAYS_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) || defined(_M_X64)
#define MT_X86 1
#define MT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MT_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))
#else
#define MT_X86 0
#endif

// ---------------------------------------------------------------------------------------------- ISA
enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

Isa cpu_isa();                       // what the CPU supports (cached after the first call)
Isa detected_isa();                  // the path the kernels take: cpu_isa(), capped by MINITENSOR_ISA
const char* isa_name(Isa isa);

// ---------------------------------------------------------------------------------------------- threads
// True in a child made by fork() of a process that had loaded _C (set by the pthread_atfork handler in
// bindings.cpp). libgomp is not fork-safe: its pool threads are not copied into the child, and the child's first
// parallel region with more than one thread waits for them forever. A child therefore runs every kernel on one
// thread, whichever of its threads calls it (OpenMP's thread count is per thread; this flag is process-wide).
inline bool& in_forked_child() {
    static bool forked = false;
    return forked;
}

inline int max_threads() {
    if (in_forked_child()) return 1;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// This thread's number and the team's size in the innermost parallel region (0 and 1 outside one, or without
// OpenMP). A region may get fewer threads than it asked for, so work split by hand uses team_size().
inline int thread_num() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// Below this much work (in multiply-adds or element visits) a kernel stays on one thread: starting a
// parallel region costs a few microseconds, more than small problems take.
constexpr index_t kParallelGrain = 32 * 1024;

// ---------------------------------------------------------------------------------------------- memory
// 64-byte aligned scratch memory (packing buffers), freed on scope exit.
template <class T>
struct Scratch {
    T* ptr = nullptr;
    explicit Scratch(index_t n) {
        if (n <= 0) return;
        std::size_t bytes = (static_cast<std::size_t>(n) * sizeof(T) + 63) / 64 * 64;
        ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
        if (!ptr) throw std::bad_alloc();
    }
    ~Scratch() { std::free(ptr); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
};

// Subnormal floats flushed to zero (FTZ: results; DAZ: inputs) on the calling thread while a kernel runs, as
// oneDNN's kernels do: arithmetic on subnormals takes microcode assists on x86, ~100x slower per instruction, and
// gradients deep in a network reach that range (a Transformer's first-layer attention backward ran 8x slower on
// them). Only values below 1.2e-38 (float) / 2.2e-308 (double) change, to 0. MXCSR is per thread, so each
// OpenMP thread sets it inside its region; the previous mode is restored on exit (numpy's own arithmetic on
// the calling thread is untouched).
struct FlushSubnormals {
#if MT_X86
    unsigned saved;
    FlushSubnormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
    ~FlushSubnormals() { _mm_setcsr(saved); }
#endif
    FlushSubnormals(const FlushSubnormals&) = delete;
    FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

// ---------------------------------------------------------------------------------------------- errors
inline std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    if (a.ndim() == 1) s << ",";
    s << ")";
    return s.str();
}

[[noreturn]] inline void value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] inline void type_error(const std::string& msg) { throw py::type_error(msg); }

// ---------------------------------------------------------------------------------------------- arrays
// A strided view of a numpy array with element (not byte) strides, checked once at the boundary.
template <class T>
struct View {
    T* data = nullptr;
    std::vector<index_t> shape, strides;
    index_t ndim() const { return static_cast<index_t>(shape.size()); }
    index_t size() const {
        index_t n = 1;
        for (auto s : shape) n *= s;
        return n;
    }
    bool contiguous() const {
        if (size() == 0) return true;  // numpy gives empty arrays arbitrary strides
        index_t expect = 1;
        for (index_t i = ndim() - 1; i >= 0; --i) {
            if (shape[i] != 1 && strides[i] != expect) return false;
            expect *= shape[i];
        }
        return true;
    }
};

// The one dtype check of every kernel: dtypes compare by value (numpy type number), never by object identity, since
// arrays from pickle, multiprocessing or joblib carry an equal dtype that is a distinct object. A float array in
// non-native byte order would be read as garbage: it is a TypeError naming the op (tensor creation converts such
// data to native order first, so only a raw kernel call can meet one).
inline bool native_byte_order(const py::dtype& dt) {
    const char order = dt.byteorder();
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return order == '=' || order == '|' || order == '>';
#else
    return order == '=' || order == '|' || order == '<';
#endif
}

template <class T>
bool is_dtype(const py::array& a, const char* op, const char* name) {
    const py::dtype dt = a.dtype();
    if (dt.num() != py::dtype::num_of<T>()) return false;
    if (!native_byte_order(dt))
        type_error(std::string(op) + ": " + name + " has non-native byte order (dtype '" + std::string(py::str(dt.attr("str"))) +
                   "'); convert it first, e.g. with a.astype(a.dtype.newbyteorder('='))");
    return true;
}

[[noreturn]] inline void dtype_error(const py::array& a, const char* op, const char* name, const std::string& expected) {
    type_error(std::string(op) + ": " + name + " has dtype " + std::string(py::str(a.dtype())) + ", expected " + expected);
}

// Check dtype and alignment and take element strides. Arrays whose strides are not whole elements (or
// whose data is misaligned) are rejected: the Python side hands such arrays over as aligned copies.
template <class T>
View<T> view_of(const py::array& a, const char* op, const char* name, bool writeable) {
    if (!is_dtype<T>(a, op, name)) dtype_error(a, op, name, std::string(py::str(py::dtype::of<T>())));
    if (writeable && !a.writeable()) value_error(std::string(op) + ": " + name + " is read-only");
    View<T> v;
    v.data = static_cast<T*>(const_cast<void*>(a.data()));
    if (reinterpret_cast<std::uintptr_t>(v.data) % alignof(T) != 0)
        value_error(std::string(op) + ": " + name + " is not aligned to its element size");
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (a.strides(i) % static_cast<py::ssize_t>(sizeof(T)) != 0)
            value_error(std::string(op) + ": " + name + " has strides that are not a multiple of its element size");
        v.shape.push_back(a.shape(i));
        v.strides.push_back(a.strides(i) / static_cast<py::ssize_t>(sizeof(T)));
    }
    return v;
}

// A C-contiguous, aligned input: the array itself when it already is one, else a contiguous aligned copy (made
// once). numpy's conversion keeps a misaligned C-contiguous array as it is, so that case is copied here.
template <class T>
py::array_t<T, py::array::c_style> contiguous_input(const py::array& a, const char* op, const char* name) {
    if (!is_dtype<T>(a, op, name)) dtype_error(a, op, name, std::string(py::str(py::dtype::of<T>())));
    auto c = py::array_t<T, py::array::c_style>::ensure(a);
    if (!c) type_error(std::string(op) + ": " + name + " could not be made C-contiguous");
    if (reinterpret_cast<std::uintptr_t>(c.data()) % alignof(T) == 0) return c;
    py::array_t<T, py::array::c_style> copy(std::vector<py::ssize_t>(c.shape(), c.shape() + c.ndim()));
    std::memcpy(copy.mutable_data(), c.data(), static_cast<std::size_t>(c.size()) * sizeof(T));
    return copy;
}

// An output buffer must be C-contiguous, writeable, of the right dtype and exactly the expected shape.
template <class T>
T* output_buffer(const py::array& a, const std::vector<index_t>& shape, const char* op, const char* name) {
    View<T> v = view_of<T>(a, op, name, /*writeable=*/true);
    if (v.shape != shape) {
        std::ostringstream s;
        s << op << ": " << name << " has shape " << shape_str(a) << ", expected (";
        for (std::size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
        s << (shape.size() == 1 ? ",)" : ")");
        value_error(s.str());
    }
    if (!v.contiguous()) value_error(std::string(op) + ": " + name + " must be C-contiguous");
    return v.data;
}

// Which floating type an array holds: float32 -> 0, float64 -> 1; anything else is a TypeError.
inline int float_kind(const py::array& a, const char* op, const char* name) {
    if (is_dtype<float>(a, op, name)) return 0;
    if (is_dtype<double>(a, op, name)) return 1;
    type_error(std::string(op) + ": " + name + " must be float32 or float64, got " + std::string(py::str(a.dtype())));
}

}  // namespace mt
