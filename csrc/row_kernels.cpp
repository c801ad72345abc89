// The row kernels of row_kernels_body.h, compiled once per ISA (x86-64 baseline, AVX2+FMA, AVX-512).
#include "row_kernels.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace mt {

namespace isa_base {
#define MT_KERNEL_ISA 0
#include "row_kernels_body.h"
#undef MT_KERNEL_ISA
}  // namespace isa_base
#if MT_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#define MT_KERNEL_ISA 1
#include "row_kernels_body.h"
#undef MT_KERNEL_ISA
}  // namespace isa_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace isa_avx512 {
#define MT_KERNEL_ISA 2
#include "row_kernels_body.h"
#undef MT_KERNEL_ISA
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

#define MT_ROW_KERNELS(NS, T) \
    RowKernels<T> { NS::softmax_rows<T>, NS::softmax_back_rows<T>, NS::ln_forward_rows<T>, NS::ln_backward_rows<T> }

template <class T>
RowKernels<T> row_kernels(Isa isa) {
#if MT_X86
    if (isa == Isa::avx512) return MT_ROW_KERNELS(isa_avx512, T);
    if (isa == Isa::avx2) return MT_ROW_KERNELS(isa_avx2, T);
#endif
    return MT_ROW_KERNELS(isa_base, T);
}

template RowKernels<float> row_kernels<float>(Isa);
template RowKernels<double> row_kernels<double>(Isa);

}  // namespace mt
