// GEMM in the style of BLIS: cache blocking, packing of A and B panels, a register-blocked micro-kernel.
//
//   for jc in N step NC:            B panel (KC x NC) packed once, shared by all threads   -> L3
//     for pc in K step KC:
//       pack B(pc:pc+KC, jc:jc+NC) into NR-wide slivers
//       for ic in M step MC:        A block (MC x KC) packed per thread                      -> L2
//         for jr in NC step NR:     one B sliver (KC x NR)                                   -> L1
//           for ir in MC step MR:   micro-kernel: an MR x NR tile of C in registers
//
// Packing reads A and B through their strides, so transposed, sliced, negatively strided or broadcast
// (stride 0) operands cost nothing extra; it also zero-pads partial slivers so the micro-kernel always
// runs full tiles. A small row-major A or B is read in place instead (B's last vector with a masked load).
// Threads split the ic loop (or, when M is one block, the jr loop; with a long K and a small C, each thread
// computes its own rows or columns of C from start to end, without barriers); every element of C is
// computed by one thread in the same k order whatever the thread count, so results are bitwise identical
// for 1 or 2 threads. Epilogues: a bias added as tiles are stored (first k block), GELU applied to each block
// of C after its last k block. Subnormals are flushed to zero while it runs (FlushSubnormals, common.h).
#include "gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <unistd.h>

namespace mt {

template <class T, int W>
struct VecT;
template <>
struct VecT<float, 4> { typedef float type __attribute__((vector_size(16))); };
template <>
struct VecT<float, 8> { typedef float type __attribute__((vector_size(32))); };
template <>
struct VecT<float, 16> { typedef float type __attribute__((vector_size(64))); };
template <>
struct VecT<double, 2> { typedef double type __attribute__((vector_size(16))); };
template <>
struct VecT<double, 4> { typedef double type __attribute__((vector_size(32))); };
template <>
struct VecT<double, 8> { typedef double type __attribute__((vector_size(64))); };

// The same kernel source, compiled once per ISA (see gemm_kernel.h).
namespace isa_base {
#define MT_KERNEL_ISA 0
#include "gemm_kernel.h"
#undef MT_KERNEL_ISA
}  // namespace isa_base
#if MT_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#define MT_KERNEL_ISA 1
#include "gemm_kernel.h"
#undef MT_KERNEL_ISA
}  // namespace isa_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace isa_avx512 {
#define MT_KERNEL_ISA 2
#include "gemm_kernel.h"
#undef MT_KERNEL_ISA
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

// ---------------------------------------------------------------------------------------------- blocking
// Chosen for Zen 4 (L1d 32 KiB, L2 1 MiB per core, L3 32 MiB) and fine on other x86-64 parts:
// - KC so that one B sliver (KC x NR) fills about half of L1 (16 KiB), leaving room for the A sliver;
// - MC so that the packed A block (MC x KC) uses a quarter of L2 (256 KiB);
// - NC so that the packed B panel (KC x NC) stays well inside a share of L3.
// MR x NR register tiles: 6 x 2 vectors uses 12 accumulators + 2 B vectors + 1 broadcast (15 of 16 ymm;
// 15 of 32 zmm): enough independent FMA chains to cover the 4-cycle FMA latency on two pipes.
struct Blocking {
    int MR, NR;
    index_t KC, MC, NC;
};

template <class T>
using MacroFn = void (*)(index_t, index_t, index_t, const T*, bool, index_t, index_t, const T*, index_t, T*, index_t,
                         index_t, T, T, const T*);

template <class T>
using PackAFn = void (*)(index_t, index_t, const T*, index_t, index_t, T*);
template <class T>
using PackBFn = void (*)(index_t, index_t, const T*, index_t, index_t, T*, index_t, index_t);

template <class T>
struct Impl {
    MacroFn<T> macro;
    PackAFn<T> pack_a;
    PackBFn<T> pack_b;
    Blocking blk;
    bool b_in_place_ok;  // the micro-kernel can read B in place with masked loads (AVX2, AVX-512)
};

// The kernels of one ISA namespace for (T, W, MR, NV); MASKED: it has masked loads (reads a small B in place).
#define MT_IMPL(NS, T, W, MR, NV, KC, MC, NC, MASKED) \
    Impl<T> { NS::macro_kernel<T, W, MR, NV>, NS::pack_a<T, MR>, NS::pack_b<T, W, NV>, {MR, NV * W, KC, MC, NC}, MASKED }

template <class T>
Impl<T> impl_for(Isa isa);

// KC for the AVX-512 kernels follows this CPU's L1 (a B sliver of KC x NR in about two thirds of it): 256 on a
// 48 KiB L1 (Intel since Ice Lake; measured best there), 128 on a 32 KiB one (Zen 4). MC keeps the packed A
// block (MC x KC) within a quarter of a 1 MiB or larger L2.
static index_t kc_for_l1(index_t sliver_row_bytes) {
    static const long l1 = [] {
        const long v = sysconf(_SC_LEVEL1_DCACHE_SIZE);
        return v > 0 ? v : 32 * 1024;
    }();
    return std::clamp<index_t>((2 * l1 / 3) / sliver_row_bytes / 64 * 64, 128, 256);
}

template <>
Impl<float> impl_for<float>(Isa isa) {
#if MT_X86
    if (isa == Isa::avx512) {
        const index_t kc = kc_for_l1(32 * sizeof(float));
        return MT_IMPL(isa_avx512, float, 16, 6, 2, kc, kc == 128 ? 480 : 240, 4096, true);
    }
    if (isa == Isa::avx2) return MT_IMPL(isa_avx2, float, 8, 6, 2, 256, 240, 4096, true);
#endif
    return MT_IMPL(isa_base, float, 4, 4, 2, 256, 128, 4096, false);
}

template <>
Impl<double> impl_for<double>(Isa isa) {
#if MT_X86
    if (isa == Isa::avx512) {
        const index_t kc = kc_for_l1(16 * sizeof(double));
        return MT_IMPL(isa_avx512, double, 8, 6, 2, kc, kc == 128 ? 240 : 120, 4096, true);
    }
    if (isa == Isa::avx2) return MT_IMPL(isa_avx2, double, 4, 6, 2, 256, 120, 4096, true);
#endif
    return MT_IMPL(isa_base, double, 2, 4, 2, 256, 64, 4096, false);
}

// C = beta * C (+ bias): the whole product when K == 0 or alpha == 0
template <class T>
static void scale_c(index_t M, index_t N, T beta, T* C, index_t rs_c, index_t cs_c, const T* bias) {
    for (index_t i = 0; i < M; ++i)
        for (index_t j = 0; j < N; ++j) {
            T* p = C + i * rs_c + j * cs_c;
            *p = (beta == T(0) ? T(0) : beta * *p) + (bias ? bias[j] : T(0));
        }
}

static index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

// The GELU epilogue on an m x n block of C (row by row; a strided C through a row buffer).
template <class T>
static void gelu_block(T* C, index_t rs_c, index_t cs_c, index_t m, index_t n, GeluFn<T> gelu) {
    if (cs_c == 1) {
        for (index_t i = 0; i < m; ++i) gelu(0, n, C + i * rs_c, nullptr, C + i * rs_c, false);
        return;
    }
    std::vector<T> row(n);
    for (index_t i = 0; i < m; ++i) {
        for (index_t j = 0; j < n; ++j) row[j] = C[i * rs_c + j * cs_c];
        gelu(0, n, row.data(), nullptr, row.data(), false);
        for (index_t j = 0; j < n; ++j) C[i * rs_c + j * cs_c] = row[j];
    }
}

// ---------------------------------------------------------------------------------------------- driver
// Packing buffers for one thread running blocking `b` on problems up to M x N.
template <class T>
struct Workspace {
    Scratch<T> a, b;
    Workspace(const Blocking& blk, index_t M, index_t N)
        : a(blk.KC * std::min(blk.MC, round_up(M, blk.MR))), b(blk.KC * std::min(blk.NC, round_up(N, blk.NR))) {}
};

// Packing A pays when each A sliver is reused across many B slivers and A is too big to stay in L2 as it is, or
// is read across rows (transposed). A small row-major A (up to 1 MiB: 128 x 128 ... 512 x 512) is read in place,
// as is any A of a product with few column slivers (attention's 17 x 16 @ 16 x 17): measured faster.
template <class T>
static bool small_row_major(index_t M, index_t K, const Mat<T>& A) {
    return A.cs == 1 && M * K * static_cast<index_t>(sizeof(T)) <= (index_t(1) << 20);
}

// The blocked loops on the calling thread, with buffers from the caller (a batch reuses one workspace).
// A small row-major B (up to 16 KiB: attention's 16 x 17, 17 x 16) is read in place by the micro-kernel rather than
// packed for each product: the packing was 15% of a batch of 17 x 16 @ 16 x 17 products.
template <class T>
static bool small_b_in_place(index_t K, index_t N, const Mat<T>& B, const Impl<T>& impl) {
    return impl.b_in_place_ok && B.cs == 1 && B.rs != 0 && K * N * static_cast<index_t>(sizeof(T)) <= 16 * 1024;
}

template <class T>
static void gemm_serial(index_t M, index_t N, index_t K, T alpha, Mat<T> A, Mat<T> B, T beta, T* C, index_t rs_c,
                        index_t cs_c, const Impl<T>& impl, const Blocking& b, Workspace<T>& ws, const T* bias,
                        GeluFn<T> gelu) {
    const bool pack_a_first = N > 2 * b.NR && !small_row_major(M, K, A);
    const bool b_in_place = small_b_in_place(K, N, B, impl);
    for (index_t jc = 0; jc < N; jc += b.NC) {
        const index_t nc = std::min(b.NC, N - jc);
        for (index_t pc = 0; pc < K; pc += b.KC) {
            const index_t kc = std::min(b.KC, K - pc);
            const T* Bblk = B.data + pc * B.rs + jc * B.cs;
            if (!b_in_place) impl.pack_b(kc, nc, Bblk, B.rs, B.cs, ws.b.ptr, 0, (nc + b.NR - 1) / b.NR);
            const T* bsrc = b_in_place ? Bblk : ws.b.ptr;
            const index_t b_rs = b_in_place ? B.rs : 0;
            for (index_t ic = 0; ic < M; ic += b.MC) {
                const index_t mc = std::min(b.MC, M - ic);
                const T* Ablk = A.data + ic * A.rs + pc * A.cs;
                const T beta_k = pc == 0 ? beta : T(1);
                const T* bias_k = pc == 0 && bias ? bias + jc : nullptr;  // added once, with the first k block
                T* Cblk = C + ic * rs_c + jc * cs_c;
                if (pack_a_first) {
                    impl.pack_a(mc, kc, Ablk, A.rs, A.cs, ws.a.ptr);
                    impl.macro(mc, nc, kc, ws.a.ptr, true, 0, 0, bsrc, b_rs, Cblk, rs_c, cs_c, alpha, beta_k, bias_k);
                } else {
                    impl.macro(mc, nc, kc, Ablk, false, A.rs, A.cs, bsrc, b_rs, Cblk, rs_c, cs_c, alpha, beta_k, bias_k);
                }
                if (gelu && pc + kc == K) gelu_block(Cblk, rs_c, cs_c, mc, nc, gelu);
            }
        }
    }
}

template <class T>
void gemm(index_t M, index_t N, index_t K, T alpha, Mat<T> A, Mat<T> B, T beta, T* C, index_t rs_c, index_t cs_c,
          int threads, Isa isa, const T* bias, GeluFn<T> gelu) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == T(0)) {
        scale_c(M, N, beta, C, rs_c, cs_c, bias);
        if (gelu) gelu_block(C, rs_c, cs_c, M, N, gelu);
        return;
    }
    const Impl<T> impl = impl_for<T>(isa);
    Blocking b = impl.blk;
    // Threads pay from about 3M multiply-adds (measured here: 128^3 runs faster on one thread, 160^3 on two)
    const int nt = (threads > 1 && M * N * K >= 96 * kParallelGrain) ? threads : 1;
    if (nt == 1) {  // no parallel region at all: small problems do not pay for thread start-up
        const FlushSubnormals ftz;
        Workspace<T> ws(b, M, N);
        gemm_serial(M, N, K, alpha, A, B, beta, C, rs_c, cs_c, impl, b, ws, bias, gelu);
        return;
    }
    // A long K and a small C (a weight gradient: 128 x 4160 x 128): the shared B panel would be repacked for every
    // K block behind two barriers while each thread has little to do per block. Instead each thread computes its
    // own columns (or rows) of C from start to end, packing what it needs itself, with no barrier at all.
    if (K >= 4 * std::max(M, N)) {
        const bool by_cols = N >= M;
        const index_t unit = by_cols ? b.NR : b.MR;
        const index_t units = ((by_cols ? N : M) + unit - 1) / unit;
        if (units >= nt) {
#pragma omp parallel num_threads(nt)
            {
                const FlushSubnormals ftz;
                const index_t t = thread_num(), team = team_size();
                const index_t lo = std::min(by_cols ? N : M, units * t / team * unit);
                const index_t hi = std::min(by_cols ? N : M, units * (t + 1) / team * unit);
                if (hi > lo) {
                    Workspace<T> ws(b, by_cols ? M : hi - lo, by_cols ? hi - lo : N);
                    if (by_cols)
                        gemm_serial(M, hi - lo, K, alpha, A, {B.data + lo * B.cs, B.rs, B.cs}, beta, C + lo * cs_c, rs_c,
                                    cs_c, impl, b, ws, bias ? bias + lo : nullptr, gelu);
                    else
                        gemm_serial(hi - lo, N, K, alpha, {A.data + lo * A.rs, A.rs, A.cs}, B, beta, C + lo * rs_c, rs_c,
                                    cs_c, impl, b, ws, bias, gelu);
                }
            }
            return;
        }
    }
    // Enough rows: each thread owns a contiguous range of whole MR slivers (sizes differ by at most one sliver),
    // cut into equal blocks of at most MC rows, and packs its own A blocks (or reads a small A in place).
    // Blocks of one size for all threads (M = 1024, MC = 174: 522 rows for one thread, 502 for the other) left
    // one thread idling at each barrier. Few rows: A is packed once, and the threads split the B slivers.
    const index_t m_slivers = (M + b.MR - 1) / b.MR;
    const bool split_rows = m_slivers >= static_cast<index_t>(nt) * 8;
    const index_t rows_max = split_rows ? (m_slivers + nt - 1) / nt * b.MR : M;
    const index_t blocks_per_thread = (rows_max + b.MC - 1) / b.MC;
    b.MC = round_up((rows_max + blocks_per_thread - 1) / blocks_per_thread, b.MR);
    const index_t nc_max = std::min(b.NC, round_up(N, b.NR));
    const index_t mc_max = std::min(b.MC, round_up(M, b.MR));
    const bool a_in_place = small_row_major(M, K, A);
    Scratch<T> bp(b.KC * nc_max);
    Scratch<T> shared_a(!split_rows && !a_in_place ? b.KC * mc_max : 0);

#pragma omp parallel num_threads(nt)
    {
        const FlushSubnormals ftz;
        Scratch<T> ap(split_rows && !a_in_place ? b.KC * mc_max : 0);
        const index_t t = thread_num(), team = team_size();
        const index_t row0 = std::min(M, m_slivers * t / team * b.MR);
        const index_t row1 = std::min(M, m_slivers * (t + 1) / team * b.MR);
        for (index_t jc = 0; jc < N; jc += b.NC) {
            const index_t nc = std::min(b.NC, N - jc);
            const index_t slivers = (nc + b.NR - 1) / b.NR;
            for (index_t pc = 0; pc < K; pc += b.KC) {
                const index_t kc = std::min(b.KC, K - pc);
                const T beta_k = pc == 0 ? beta : T(1);
                const T* bias_k = pc == 0 && bias ? bias + jc : nullptr;
                const T* Bblk = B.data + pc * B.rs + jc * B.cs;
                impl.pack_b(kc, nc, Bblk, B.rs, B.cs, bp.ptr, slivers * t / team, slivers * (t + 1) / team);
#pragma omp barrier
                if (split_rows) {
                    for (index_t ic = row0; ic < row1; ic += b.MC) {
                        const index_t mc = std::min(b.MC, row1 - ic);
                        const T* Ablk = A.data + ic * A.rs + pc * A.cs;
                        T* Cblk = C + ic * rs_c + jc * cs_c;
                        if (a_in_place) {
                            impl.macro(mc, nc, kc, Ablk, false, A.rs, A.cs, bp.ptr, 0, Cblk, rs_c, cs_c, alpha, beta_k, bias_k);
                        } else {
                            impl.pack_a(mc, kc, Ablk, A.rs, A.cs, ap.ptr);
                            impl.macro(mc, nc, kc, ap.ptr, true, 0, 0, bp.ptr, 0, Cblk, rs_c, cs_c, alpha, beta_k, bias_k);
                        }
                        if (gelu && pc + kc == K) gelu_block(Cblk, rs_c, cs_c, mc, nc, gelu);
                    }
#pragma omp barrier
                    // (B is repacked next: every thread must be done with it)
                } else {
                    // one row block (small M): pack A once (or read it in place), split the B slivers between threads
                    for (index_t ic = 0; ic < M; ic += b.MC) {
                        const index_t mc = std::min(b.MC, M - ic);
                        const T* Ablk = A.data + ic * A.rs + pc * A.cs;
                        if (!a_in_place) {
#pragma omp single
                            impl.pack_a(mc, kc, Ablk, A.rs, A.cs, shared_a.ptr);
                        }
#pragma omp for schedule(static)
                        for (index_t s = 0; s < slivers; ++s) {
                            const index_t j0 = s * b.NR;
                            const index_t n = std::min<index_t>(b.NR, nc - j0);
                            T* Cs = C + ic * rs_c + (jc + j0) * cs_c;
                            if (a_in_place)
                                impl.macro(mc, n, kc, Ablk, false, A.rs, A.cs, bp.ptr + j0 * kc, 0, Cs, rs_c, cs_c,
                                           alpha, beta_k, bias_k ? bias_k + j0 : nullptr);
                            else
                                impl.macro(mc, n, kc, shared_a.ptr, true, 0, 0, bp.ptr + j0 * kc, 0, Cs, rs_c, cs_c,
                                           alpha, beta_k, bias_k ? bias_k + j0 : nullptr);
                            if (gelu && pc + kc == K) gelu_block(Cs, rs_c, cs_c, mc, n, gelu);
                        }
                    }
                }
            }
        }
    }
}

template void gemm<float>(index_t, index_t, index_t, float, Mat<float>, Mat<float>, float, float*, index_t, index_t, int,
                          Isa, const float*, GeluFn<float>);
template void gemm<double>(index_t, index_t, index_t, double, Mat<double>, Mat<double>, double, double*, index_t,
                           index_t, int, Isa, const double*, GeluFn<double>);

// ---------------------------------------------------------------------------------------------- batched
// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] over any number of batch dims (broadcast batch dims have
// stride 0 in A or B). Many small products (attention: (B*H, S, D) @ (B*H, D, S)) run one per thread;
// few big ones run one after another, each using all threads.
template <class T>
static void gemm_batched(const View<T>& a, const View<T>& b, const View<T>& c, bool ta, bool tb, T alpha, T beta, Isa isa,
                         const T* bias, GeluFn<T> gelu) {
    const index_t nd = c.ndim();
    const index_t M = c.shape[nd - 2], N = c.shape[nd - 1];
    const index_t K = ta ? a.shape[nd - 2] : a.shape[nd - 1];
    Mat<T> A0{nullptr, a.strides[nd - 2], a.strides[nd - 1]};
    Mat<T> B0{nullptr, b.strides[nd - 2], b.strides[nd - 1]};
    if (ta) A0 = A0.transposed();
    if (tb) B0 = B0.transposed();
    index_t batch = 1;
    for (index_t d = 0; d < nd - 2; ++d) batch *= c.shape[d];
    if (batch == 0) return;
    auto offsets = [&](index_t idx, index_t& oa, index_t& ob, index_t& oc) {
        oa = ob = oc = 0;
        if (nd == 3) {  // one batch dim (the usual case): no division per product
            oa = idx * a.strides[0], ob = idx * b.strides[0], oc = idx * c.strides[0];
            return;
        }
        for (index_t d = nd - 3; d >= 0; --d) {
            const index_t i = idx % c.shape[d];
            idx /= c.shape[d];
            oa += i * a.strides[d];
            ob += i * b.strides[d];
            oc += i * c.strides[d];
        }
    };
    const int threads = max_threads();
    if (M * N * K >= 64 * kParallelGrain || batch == 1) {  // big products: one after another, all threads each
        for (index_t i = 0; i < batch; ++i) {
            index_t oa, ob, oc;
            offsets(i, oa, ob, oc);
            gemm<T>(M, N, K, alpha, {a.data + oa, A0.rs, A0.cs}, {b.data + ob, B0.rs, B0.cs}, beta, c.data + oc,
                    c.strides[nd - 2], c.strides[nd - 1], threads, isa, bias, gelu);
        }
        return;
    }
    // many small products: whole products per thread, each thread reusing one packing workspace
    const Impl<T> impl = impl_for<T>(isa);
    if (K <= 0 || alpha == T(0)) {
        for (index_t i = 0; i < batch; ++i) {
            index_t oa, ob, oc;
            offsets(i, oa, ob, oc);
            scale_c(M, N, beta, c.data + oc, c.strides[nd - 2], c.strides[nd - 1], bias);
            if (gelu) gelu_block(c.data + oc, c.strides[nd - 2], c.strides[nd - 1], M, N, gelu);
        }
        return;
    }
#pragma omp parallel if (threads > 1 && batch * M * N * K >= kParallelGrain)
    {
        const FlushSubnormals ftz;
        Workspace<T> ws(impl.blk, M, N);
#pragma omp for schedule(static)
        for (index_t i = 0; i < batch; ++i) {
            index_t oa, ob, oc;
            offsets(i, oa, ob, oc);
            gemm_serial<T>(M, N, K, alpha, {a.data + oa, A0.rs, A0.cs}, {b.data + ob, B0.rs, B0.cs}, beta,
                           c.data + oc, c.strides[nd - 2], c.strides[nd - 1], impl, impl.blk, ws, bias, gelu);
        }
    }
}

Isa parse_isa(const py::object& isa, const char* op) {
    if (isa.is_none()) return detected_isa();
    const Isa best = cpu_isa();  // an explicit choice may go above the MINITENSOR_ISA cap, not above the CPU
    const std::string name = py::cast<std::string>(isa);
    Isa want;
    if (name == "avx512") want = Isa::avx512;
    else if (name == "avx2") want = Isa::avx2;
    else if (name == "scalar") want = Isa::scalar;
    else value_error(std::string(op) + ": isa must be 'avx512', 'avx2' or 'scalar', got '" + name + "'");
    if (static_cast<int>(want) > static_cast<int>(best))
        value_error(std::string(op) + ": this CPU does not support isa '" + name + "' (best: " + isa_name(best) + ")");
    return want;
}

template <class T>
static void gemm_entry(const py::array& a, const py::array& b, const py::array& c, bool ta, bool tb, double alpha,
                       double beta, Isa isa, const py::object& bias, const std::string& activation) {
    View<T> va = view_of<T>(a, "gemm", "a", false), vb = view_of<T>(b, "gemm", "b", false);
    View<T> vc = view_of<T>(c, "gemm", "c", true);
    const index_t nd = vc.ndim();
    auto fail = [&]() {
        value_error("gemm: shapes a " + shape_str(a) + (ta ? " (transposed)" : "") + ", b " + shape_str(b) +
                    (tb ? " (transposed)" : "") + " and c " + shape_str(c) +
                    " do not fit C = op(A) @ op(B) with equal batch dims");
    };
    if (nd < 2 || va.ndim() != nd || vb.ndim() != nd) fail();
    for (index_t d = 0; d < nd - 2; ++d)
        if (va.shape[d] != vc.shape[d] || vb.shape[d] != vc.shape[d]) fail();
    const index_t M = vc.shape[nd - 2], N = vc.shape[nd - 1];
    const index_t am = ta ? va.shape[nd - 1] : va.shape[nd - 2], ak = ta ? va.shape[nd - 2] : va.shape[nd - 1];
    const index_t bk = tb ? vb.shape[nd - 1] : vb.shape[nd - 2], bn = tb ? vb.shape[nd - 2] : vb.shape[nd - 1];
    if (am != M || bn != N || ak != bk) fail();
    if (vc.size() == 0) return;  // nothing to write (and numpy gives empty arrays arbitrary strides)
    for (index_t d = 0; d < nd; ++d)
        if (vc.shape[d] > 1 && vc.strides[d] == 0) value_error("gemm: c must not have broadcast (zero-stride) dims");
    const T* bias_ptr = nullptr;
    if (!bias.is_none()) {
        const py::array bias_a = py::cast<py::array>(bias);
        const View<T> vbias = view_of<T>(bias_a, "gemm", "bias", false);
        if (vbias.ndim() != 1 || vbias.shape[0] != N || !vbias.contiguous())
            value_error("gemm: bias must be a contiguous 1-D array of " + std::to_string(N) +
                        " elements (c's last dim), got " + shape_str(bias_a));
        bias_ptr = vbias.data;
    }
    GeluFn<T> gelu = nullptr;
    if (activation == "gelu") gelu = gelu_kernel<T>(isa);
    else if (activation != "none") value_error("gemm: activation must be 'none' or 'gelu', got '" + activation + "'");
    py::gil_scoped_release release;
    gemm_batched<T>(va, vb, vc, ta, tb, static_cast<T>(alpha), static_cast<T>(beta), isa, bias_ptr, gelu);
}

// Peak FLOP/s of this machine for one ISA and dtype, measured with fma_probe on `threads` threads.
static double peak_gflops(bool f64, Isa isa, int threads) {
    double (*probe)(index_t) = nullptr;
#if MT_X86
    if (isa == Isa::avx512) probe = f64 ? isa_avx512::fma_probe<double, 8> : isa_avx512::fma_probe<float, 16>;
    else if (isa == Isa::avx2) probe = f64 ? isa_avx2::fma_probe<double, 4> : isa_avx2::fma_probe<float, 8>;
#endif
    if (!probe) probe = f64 ? isa_base::fma_probe<double, 2> : isa_base::fma_probe<float, 4>;
    const index_t iterations = 20'000'000;
    probe(iterations / 10);  // warm up (clock ramps, pages)
    double flops = 0, seconds = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops) reduction(max : seconds)
    {
        const auto t0 = std::chrono::steady_clock::now();
        flops += probe(iterations);
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    return flops / seconds / 1e9;
}

void register_gemm(py::module_& m) {
    m.def(
        "peak_gflops",
        [](const std::string& dtype, const py::object& isa, int threads) {
            const Isa chosen = parse_isa(isa);
            if (dtype != "float32" && dtype != "float64") value_error("peak_gflops: dtype must be 'float32' or 'float64'");
            if (threads > 1 && in_forked_child())  // OpenMP's pool does not survive fork(): see common.h
                throw std::runtime_error("peak_gflops: threads=" + std::to_string(threads) +
                                         " in a fork() child of a process that loaded minitensor; only 1 works here");
            py::gil_scoped_release release;
            return peak_gflops(dtype == "float64", chosen, std::max(threads, 1));
        },
        py::arg("dtype") = "float32", py::arg("isa") = py::none(), py::arg("threads") = 1,
        "Measured peak GFLOP/s (independent FMA chains in registers) for a dtype and ISA on `threads` threads.");
    m.def(
        "gemm",
        [](const py::array& a, const py::array& b, const py::array& c, bool trans_a, bool trans_b, double alpha,
           double beta, const py::object& isa, const py::object& bias, const std::string& activation) {
            const Isa chosen = parse_isa(isa);
            const int kind = float_kind(c, "gemm", "c");
            if (kind == 0) gemm_entry<float>(a, b, c, trans_a, trans_b, alpha, beta, chosen, bias, activation);
            else gemm_entry<double>(a, b, c, trans_a, trans_b, alpha, beta, chosen, bias, activation);
        },
        py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("isa") = py::none(), py::arg("bias") = py::none(),
        py::arg("activation") = "none",
        "c[...] = alpha * op(a[...]) @ op(b[...]) + beta * c[...] (+ bias) over equal batch dims; op = transpose when "
        "trans_a / trans_b. a and b may have any strides (0 for broadcast batch dims); c is written in place. bias, "
        "if given, is a contiguous 1-D array of c's last dim and dtype, added to every row as c is stored; activation "
        "'gelu' applies GELU (erf form) to c, block by block as the blocks are finished.");
}

}  // namespace mt
