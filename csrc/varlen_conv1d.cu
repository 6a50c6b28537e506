// varlen_conv1d: channels-last conv1d over packed sequences as implicit GEMMs.
//
//   forward  y[m, n]  = sum_j sum_c  x[src_j(m), c]  * w_f[j, c, n]   (+ bias, GELU epilogue; M = total_y)
//   grad_x   dx[m, n] = sum_j sum_c  g[src_j(m), c]  * w_b[j, c, n]   (transposed conv; M = total)
//   grad_w   dw[n, c, j] = sum_t g[t, n] * x[src_j(t), c]            (reduction over tokens; grad_b fused)
//
// src_j(m) is the row that tap j reads for row m (or none: the zero padding at a sequence edge). The
// forward reads x row start + t*stride - pad + j; grad_x reads grad row (i + pad - j) / stride when that
// divides exactly. grad_x blocks are split by phase ph = (i + pad) % stride (grid z): a frame of phase ph
// is reached only by taps ph, ph + stride, ..., so a strided conv's grad_x does 1/stride of the dense
// work. Rows map to sequences by binary search over the offsets, once per block tile.
// Tiles are 128 x 128 with a 32-deep reduction step staged in shared memory; fp16/bf16 multiply on
// tensor cores (WMMA 16x16x16, fp32 accumulate), fp32 on CUDA cores (8 x 8 outputs per thread).
// Every output element is written by one block: deterministic.
#include "common.h"
#include <mma.h>

namespace {

constexpr int BM = 128, BN = 128, BK = 32, kThreads = 256;
constexpr float kSqrtHalf = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f;

template <typename T> struct Pad { static constexpr int value = 16 / sizeof(T); };  // keeps WMMA ldm legal

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

__device__ __forceinline__ int find_seq(const int32_t* cu, int n_seq, int64_t idx) {
  int lo = 0, hi = n_seq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= idx) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Copies VEC elements of row `src` (or zeros when src < 0) starting at column `col` into dst.
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(T* dst, const T* __restrict__ base, int64_t src, int64_t ld, int col,
                                         int limit) {
  if (VEC > 1) {
    Vec<T, VEC> v;
    if (src >= 0 && col < limit) {
      v = *reinterpret_cast<const Vec<T, VEC>*>(base + src * ld + col);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) v.v[e] = ak::from_float<T>(0.f);
    }
    *reinterpret_cast<Vec<T, VEC>*>(dst) = v;
  } else {
    dst[0] = (src >= 0 && col < limit) ? base[src * ld + col] : ak::from_float<T>(0.f);
  }
}

struct GemmArgs {
  const void* a;       // gathered operand rows [*, kdim]
  const void* b;       // [taps, kdim, n] dense
  void* out;           // [m, n]
  void* pre;           // forward + GELU: pre-activation [m, n]
  const void* bias;    // forward: [n] or null
  const int32_t* cu_m; // offsets of the output rows
  const int32_t* cu_a; // offsets of the gathered rows
  const int32_t* cu_ph; // grad_x: [stride, n_seq + 1] per-phase frame offsets (phase_offsets in reference.py)
  int64_t m;           // rows (forward) or an upper bound of the rows of one phase (grad_x)
  int n_seq, kdim, n, taps, stride, pad;
  bool transposed;     // false: forward tap rule; true: grad_x tap rule
  bool gelu;
};

// Per-row tap data for one 128-row tile: the row's position inside its sequence, its sequence's first
// gathered row, the number of gathered rows of that sequence (-1: no row), and the output row.
struct RowInfo {
  int local[BM];
  int64_t start[BM];
  int len[BM];
  int64_t out_row[BM];
};

__device__ __forceinline__ int64_t tap_src(const RowInfo& ri, int r, int j, int stride, int pad, bool transposed) {
  if (ri.len[r] < 0) return -1;
  if (!transposed) {
    const int pos = ri.local[r] * stride - pad + j;
    return (pos >= 0 && pos < ri.len[r]) ? ri.start[r] + pos : -1;
  }
  const int num = ri.local[r] + pad - j;
  if (num < 0 || num % stride != 0 || num / stride >= ri.len[r]) return -1;
  return ri.start[r] + num / stride;
}

__device__ __forceinline__ float gelu(float v) { return 0.5f * v * (1.f + erff(v * kSqrtHalf)); }

template <typename T>
__device__ __forceinline__ void store_out(const GemmArgs& p, int64_t row, int col, float v) {
  if (row < 0 || col >= p.n) return;
  const int64_t off = row * p.n + col;
  if (!p.transposed) {
    if (p.bias) v += ak::to_float<T>(static_cast<const T*>(p.bias)[col]);
    if (p.gelu) {
      static_cast<T*>(p.pre)[off] = ak::from_float<T>(v);
      v = gelu(v);
    }
  }
  static_cast<T*>(p.out)[off] = ak::from_float<T>(v);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) gather_gemm_kernel(GemmArgs p) {
  constexpr int AP = BK + Pad<T>::value, BP = BN + Pad<T>::value;
  __shared__ __align__(32) T As[BM * AP];
  __shared__ __align__(32) T Bs[BK * BP];
  __shared__ RowInfo ri;
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  const int tid = threadIdx.x;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;
  const int ph = p.transposed ? static_cast<int>(blockIdx.z) : 0;
  const int32_t* cu_rows = p.transposed ? p.cu_ph + static_cast<int64_t>(ph) * (p.n_seq + 1) : p.cu_m;
  const int64_t rows = p.transposed ? static_cast<int64_t>(cu_rows[p.n_seq]) : p.m;
  if (m0 >= rows) return;  // whole block past this phase's frames (uniform: before any barrier)
  const int first = p.transposed ? ((ph - p.pad) % p.stride + p.stride) % p.stride : 0;
  for (int r = tid; r < BM; r += kThreads) {
    const int64_t q = m0 + r;
    if (q < rows) {
      const int s = find_seq(cu_rows, p.n_seq, q);
      const int pos = static_cast<int>(q - cu_rows[s]);
      const int local = p.transposed ? first + pos * p.stride : pos;
      ri.local[r] = local;
      ri.start[r] = p.cu_a[s];
      ri.len[r] = p.cu_a[s + 1] - p.cu_a[s];
      ri.out_row[r] = p.transposed ? static_cast<int64_t>(p.cu_m[s]) + local : q;
    } else {
      ri.len[r] = -1;
      ri.out_row[r] = -1;
    }
  }
  __syncthreads();
  // taps that can reach this block's rows: all (forward), or ph, ph + stride, ... (grad_x)
  const int n_taps = p.transposed ? (p.taps - ph + p.stride - 1) / p.stride : p.taps;

  using namespace nvcuda;
  constexpr bool kTensorCores = !std::is_same<T, float>::value;
  const int warp = tid / 32, warp_m = warp / 4, warp_n = warp % 4;  // 2 x 4 warps of 64 x 32
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_tc[4][2];
  float acc[8][8];
  if constexpr (kTensorCores) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) wmma::fill_fragment(acc_tc[i][jj], 0.f);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) acc[i][jj] = 0.f;
  }

  for (int tap = 0; tap < n_taps; ++tap) {
    const int j = p.transposed ? ph + tap * p.stride : tap;
    for (int k0 = 0; k0 < p.kdim; k0 += BK) {
      for (int idx = tid; idx < BM * BK / VEC; idx += kThreads) {
        const int r = idx / (BK / VEC), c = (idx % (BK / VEC)) * VEC;
        load_vec<T, VEC>(&As[r * AP + c], a, tap_src(ri, r, j, p.stride, p.pad, p.transposed), p.kdim, k0 + c,
                         p.kdim);
      }
      for (int idx = tid; idx < BK * BN / VEC; idx += kThreads) {
        const int r = idx / (BN / VEC), c = (idx % (BN / VEC)) * VEC;
        const int64_t src = k0 + r < p.kdim ? static_cast<int64_t>(j) * p.kdim + k0 + r : -1;
        load_vec<T, VEC>(&Bs[r * BP + c], b, src, p.n, n0 + c, p.n);
      }
      __syncthreads();
      if constexpr (kTensorCores) {
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[4];
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb[2];
#pragma unroll
          for (int i = 0; i < 4; ++i) wmma::load_matrix_sync(fa[i], &As[(warp_m * 64 + i * 16) * AP + kk], AP);
#pragma unroll
          for (int jj = 0; jj < 2; ++jj) wmma::load_matrix_sync(fb[jj], &Bs[kk * BP + warp_n * 32 + jj * 16], BP);
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int jj = 0; jj < 2; ++jj) wmma::mma_sync(acc_tc[i][jj], fa[i], fb[jj], acc_tc[i][jj]);
        }
      } else {
        const int tx = tid % 16, ty = tid / 16;
#pragma unroll 4
        for (int kk = 0; kk < BK; ++kk) {
          float av[8], bv[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) av[i] = ak::to_float<T>(As[(ty + 16 * i) * AP + kk]);
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) bv[jj] = ak::to_float<T>(Bs[kk * BP + tx + 16 * jj]);
#pragma unroll
          for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int jj = 0; jj < 8; ++jj) acc[i][jj] = fmaf(av[i], bv[jj], acc[i][jj]);
        }
      }
      __syncthreads();
    }
  }

  if constexpr (kTensorCores) {
    // stage each 16 x 16 fragment through shared memory (reusing As) and run the epilogue per element
    float* stage = reinterpret_cast<float*>(As) + warp * 16 * 20;
    static_assert(sizeof(T) * BM * AP >= sizeof(float) * 8 * 16 * 20, "staging buffer too small");
    const int lane = tid % 32;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        wmma::store_matrix_sync(stage, acc_tc[i][jj], 20, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
          const int r = e / 16, c = e % 16;
          store_out<T>(p, ri.out_row[warp_m * 64 + i * 16 + r], n0 + warp_n * 32 + jj * 16 + c, stage[r * 20 + c]);
        }
        __syncwarp();
      }
  } else {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) store_out<T>(p, ri.out_row[ty + 16 * i], n0 + tx + 16 * jj, acc[i][jj]);
  }
}

// grad_w[co, ci, j] for one (co tile, ci tile, tap j) block, reducing over all output tokens; blocks with
// ci tile 0 and tap 0 also write grad_b[co] = sum_t g[t, co].
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) dw_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                                      T* __restrict__ dw, T* __restrict__ db,
                                                      const int32_t* __restrict__ cu_x,
                                                      const int32_t* __restrict__ cu_y, int64_t total_y, int n_seq,
                                                      int c_in, int c_out, int taps, int stride, int pad) {
  constexpr int GP = BM + Pad<T>::value, XP = BN + Pad<T>::value;
  __shared__ __align__(32) T smem[BK * GP + BK * XP];
  T* Gs = smem;            // [token, co]: the col-major view of the A = g^T tile
  T* Xs = smem + BK * GP;  // [token, ci]
  __shared__ int64_t src[BK];
  const int tid = threadIdx.x;
  const int co0 = blockIdx.x * BM, ci0 = blockIdx.y * BN, j = blockIdx.z;
  const bool do_bias = blockIdx.y == 0 && j == 0 && db != nullptr;
  float db_acc = 0.f;

  using namespace nvcuda;
  constexpr bool kTensorCores = !std::is_same<T, float>::value;
  const int warp = tid / 32, warp_m = warp / 4, warp_n = warp % 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_tc[4][2];
  float acc[8][8];
  if constexpr (kTensorCores) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) wmma::fill_fragment(acc_tc[i][jj], 0.f);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) acc[i][jj] = 0.f;
  }

  for (int64_t t0 = 0; t0 < total_y; t0 += BK) {
    if (tid < BK) {
      const int64_t t = t0 + tid;
      int64_t s_row = -1;
      if (t < total_y) {
        const int s = find_seq(cu_y, n_seq, t);
        const int pos = static_cast<int>(t - cu_y[s]) * stride - pad + j;
        if (pos >= 0 && pos < cu_x[s + 1] - cu_x[s]) s_row = cu_x[s] + pos;
      }
      src[tid] = s_row;
    }
    __syncthreads();
    for (int idx = tid; idx < BK * BM / VEC; idx += kThreads) {
      const int r = idx / (BM / VEC), c = (idx % (BM / VEC)) * VEC;
      load_vec<T, VEC>(&Gs[r * GP + c], g, t0 + r < total_y ? t0 + r : -1, c_out, co0 + c, c_out);
    }
    for (int idx = tid; idx < BK * BN / VEC; idx += kThreads) {
      const int r = idx / (BN / VEC), c = (idx % (BN / VEC)) * VEC;
      load_vec<T, VEC>(&Xs[r * XP + c], x, src[r], c_in, ci0 + c, c_in);
    }
    __syncthreads();
    if (do_bias && tid < BM) {
      for (int r = 0; r < BK; ++r) db_acc += ak::to_float<T>(Gs[r * GP + tid]);
    }
    if constexpr (kTensorCores) {
#pragma unroll
      for (int kk = 0; kk < BK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> fa[4];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb[2];
#pragma unroll
        for (int i = 0; i < 4; ++i) wmma::load_matrix_sync(fa[i], &Gs[kk * GP + warp_m * 64 + i * 16], GP);
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) wmma::load_matrix_sync(fb[jj], &Xs[kk * XP + warp_n * 32 + jj * 16], XP);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int jj = 0; jj < 2; ++jj) wmma::mma_sync(acc_tc[i][jj], fa[i], fb[jj], acc_tc[i][jj]);
      }
    } else {
      const int tx = tid % 16, ty = tid / 16;
#pragma unroll 4
      for (int kk = 0; kk < BK; ++kk) {
        float av[8], bv[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) av[i] = ak::to_float<T>(Gs[kk * GP + ty + 16 * i]);
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) bv[jj] = ak::to_float<T>(Xs[kk * XP + tx + 16 * jj]);
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) acc[i][jj] = fmaf(av[i], bv[jj], acc[i][jj]);
      }
    }
    __syncthreads();
  }

  if (do_bias && tid < BM && co0 + tid < c_out) db[co0 + tid] = ak::from_float<T>(db_acc);
  auto store = [&](int co, int ci, float v) {
    if (co < c_out && ci < c_in) dw[(static_cast<int64_t>(co) * c_in + ci) * taps + j] = ak::from_float<T>(v);
  };
  if constexpr (kTensorCores) {
    float* stage = reinterpret_cast<float*>(smem) + warp * 16 * 20;
    static_assert(sizeof(T) * BK * (GP + XP) >= sizeof(float) * 8 * 16 * 20, "staging buffer too small");
    const int lane = tid % 32;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        wmma::store_matrix_sync(stage, acc_tc[i][jj], 20, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
          const int r = e / 16, c = e % 16;
          store(co0 + warp_m * 64 + i * 16 + r, ci0 + warp_n * 32 + jj * 16 + c, stage[r * 20 + c]);
        }
        __syncwarp();
      }
  } else {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) store(co0 + ty + 16 * i, ci0 + tx + 16 * jj, acc[i][jj]);
  }
}

template <typename T>
__global__ void gelu_grad_kernel(const T* __restrict__ gy, const T* __restrict__ pre, T* __restrict__ out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float z = ak::to_float<T>(pre[i]);
    const float d = 0.5f * (1.f + erff(z * kSqrtHalf)) + z * expf(-0.5f * z * z) * kInvSqrt2Pi;
    out[i] = ak::from_float<T>(ak::to_float<T>(gy[i]) * d);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename T>
cudaError_t launch_gemm(const GemmArgs& p, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  if (p.m == 0 || p.n == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((p.m + BM - 1) / BM), static_cast<unsigned>((p.n + BN - 1) / BN),
                  p.transposed ? static_cast<unsigned>(p.stride) : 1u);
  if (p.kdim % V == 0 && p.n % V == 0 && aligned16(p.a) && aligned16(p.b)) {
    gather_gemm_kernel<T, V><<<grid, kThreads, 0, stream>>>(p);
  } else {
    gather_gemm_kernel<T, 1><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_dw(const void* g, const void* x, void* dw, void* db, const int32_t* cu_x, const int32_t* cu_y,
                      int64_t total_y, int n_seq, int c_in, int c_out, int taps, int stride, int pad,
                      cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const dim3 grid((c_out + BM - 1) / BM, (c_in + BN - 1) / BN, taps);
  if (c_in % V == 0 && c_out % V == 0 && aligned16(g) && aligned16(x)) {
    dw_kernel<T, V><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(g), static_cast<const T*>(x),
                                                   static_cast<T*>(dw), static_cast<T*>(db), cu_x, cu_y, total_y,
                                                   n_seq, c_in, c_out, taps, stride, pad);
  } else {
    dw_kernel<T, 1><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(g), static_cast<const T*>(x),
                                                   static_cast<T*>(dw), static_cast<T*>(db), cu_x, cu_y, total_y,
                                                   n_seq, c_in, c_out, taps, stride, pad);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_gelu_grad(const void* gy, const void* pre, void* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + 255) / 256;
  gelu_grad_kernel<T><<<static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8), 256, 0, stream>>>(
      static_cast<const T*>(gy), static_cast<const T*>(pre), static_cast<T*>(out), n);
  return cudaGetLastError();
}

}  // namespace

// y [total_y, c_out] (and pre [total_y, c_out] when gelu) from x [total, c_in]; w_t is the weight laid
// out as [k, c_in, c_out]; bias [c_out] or null; cu_x / cu_y int32 [n_seq + 1] device offsets.
extern "C" cudaError_t ak_varlen_conv1d_fwd(const void* x, const void* w_t, const void* bias, void* y, void* pre,
                                            const int32_t* cu_x, const int32_t* cu_y, int64_t total_y,
                                            int32_t n_seq, int32_t c_in, int32_t c_out, int32_t k, int32_t stride,
                                            int32_t padding, int32_t gelu, int32_t dtype, cudaStream_t stream) {
  GemmArgs p{x,     w_t,  y,     pre,    bias,   cu_y,    cu_x,  nullptr,
             total_y, n_seq, c_in, c_out, k, stride, padding, false, gelu != 0};
  return AK_DISPATCH_DTYPE(dtype, launch_gemm, p, stream);
}

// grad_x [total, c_in] from grad_pre [total_y, c_out]; w_t is the weight laid out as [k, c_out, c_in];
// cu_ph int32 [stride, n_seq + 1] are the per-phase frame offsets (every frame of grad_x is written).
extern "C" cudaError_t ak_varlen_conv1d_dx(const void* grad_pre, const void* w_t, void* grad_x, const int32_t* cu_x,
                                           const int32_t* cu_y, const int32_t* cu_ph, int64_t total, int32_t n_seq,
                                           int32_t c_in, int32_t c_out, int32_t k, int32_t stride, int32_t padding,
                                           int32_t dtype, cudaStream_t stream) {
  // a phase holds at most sum_i ceil(L_i / stride) <= total / stride + n_seq frames
  const int64_t bound = total < total / stride + n_seq ? total : total / stride + n_seq;
  GemmArgs p{grad_pre, w_t,   grad_x, nullptr, nullptr, cu_x,    cu_y,    cu_ph,
             bound,    n_seq, c_out,  c_in,    k,       stride,  padding, true, false};
  return AK_DISPATCH_DTYPE(dtype, launch_gemm, p, stream);
}

// grad_w [c_out, c_in, k] and (when grad_b is not null) grad_b [c_out] from grad_pre [total_y, c_out] and x.
extern "C" cudaError_t ak_varlen_conv1d_dw(const void* grad_pre, const void* x, void* grad_w, void* grad_b,
                                           const int32_t* cu_x, const int32_t* cu_y, int64_t total_y, int32_t n_seq,
                                           int32_t c_in, int32_t c_out, int32_t k, int32_t stride, int32_t padding,
                                           int32_t dtype, cudaStream_t stream) {
  return AK_DISPATCH_DTYPE(dtype, launch_dw, grad_pre, x, grad_w, grad_b, cu_x, cu_y, total_y, n_seq, c_in, c_out,
                           k, stride, padding, stream);
}

// out = grad_y * gelu'(pre), n elements.
extern "C" cudaError_t ak_varlen_conv1d_gelu_grad(const void* grad_y, const void* pre, void* out, int64_t n,
                                                  int32_t dtype, cudaStream_t stream) {
  return AK_DISPATCH_DTYPE(dtype, launch_gelu_grad, grad_y, pre, out, n, stream);
}
