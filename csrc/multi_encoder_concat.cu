// multi_encoder_concat: feature concatenation of E (<= 8) packed streams, optionally fused with the
// projection y = concat @ W^T + b, never materializing the concatenation.
// Stream e is [total_e, D_e] with offsets cu_e[N+1]; output sequence i has L_i = max_e len_{e,i} rows
// (cu_y). An output row finds its sequence by binary search over cu_y; stream e supplies row
// cu_e[i] + pos, or zeros when pos >= len_{e,i}.
//  * concat: one thread per VEC consecutive output features (16-byte vectors when every width, offset
//    and pointer allows), a block covers whole rows.
//  * concat + projection and its backward GEMMs: one tiled fp32-FMA GEMM (64x64 tile, 4x4 per thread,
//    K step 16, operands converted to fp32 in shared memory) with three operand gathers:
//      FWD: A = stream rows gathered per output row, B = W's segment of stream e (K walks the streams);
//      DX : A = grad_y rows gathered per stream row, B = W[:, seg_e]  -> grad_stream_e;
//      DW : A = grad_y^T with K = stream rows (gathered), B = stream_e -> grad_W[:, seg_e].
//    For fp16/bf16 with 16-byte-aligned rows (widths, D_out multiples of 8) the three GEMMs run on tensor
//    cores instead (WMMA 16x16x16, 128x128 block tile, K step 32, fp32 accumulation).
//  * grad_bias: column sums of grad_y, fixed order. No atomics anywhere: deterministic.
#include <mma.h>

#include <type_traits>

#include "common.h"

namespace {

constexpr int kMaxStreams = 8;
constexpr int kThreads = 256;

struct Streams {
  const void* ptr[kMaxStreams];
  const int32_t* cu[kMaxStreams];
  int width[kMaxStreams];
  int offset[kMaxStreams];
  int count;
};

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// largest i < n_seq with cu[i] <= idx (n_seq >= 1)
__device__ __forceinline__ int find_seq(const int32_t* __restrict__ cu, int n_seq, int64_t idx) {
  int lo = 0, hi = n_seq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= idx) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// ---------------------------------------------------------------- output offsets ----
constexpr int kScanThreads = 1024;

// cu_y[0] = 0, cu_y[i + 1] = sum_{j <= i} max_e len_{e,j}. One block: each thread sums a run of
// sequences, a block-wide inclusive scan of the run totals, then each thread writes its run.
__global__ void __launch_bounds__(kScanThreads) output_offsets_kernel(Streams s, int n_seq, int32_t* __restrict__ cu_y) {
  __shared__ int32_t part[kScanThreads];
  const int per = (n_seq + kScanThreads - 1) / kScanThreads;
  const int i0 = threadIdx.x * per;
  const int i1 = min(i0 + per, n_seq);
  auto longest = [&](int i) {
    int32_t l = 0;
    for (int e = 0; e < s.count; ++e) l = max(l, s.cu[e][i + 1] - s.cu[e][i]);
    return l;
  };
  int32_t local = 0;
  for (int i = i0; i < i1; ++i) local += longest(i);
  part[threadIdx.x] = local;
  __syncthreads();
  for (int off = 1; off < kScanThreads; off <<= 1) {
    const int32_t v = threadIdx.x >= off ? part[threadIdx.x - off] : 0;
    __syncthreads();
    part[threadIdx.x] += v;
    __syncthreads();
  }
  int32_t run = threadIdx.x > 0 ? part[threadIdx.x - 1] : 0;
  if (threadIdx.x == 0) cu_y[0] = 0;
  for (int i = i0; i < i1; ++i) {
    run += longest(i);
    cu_y[i + 1] = run;
  }
}

// ---------------------------------------------------------------- concat (bandwidth) ----
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) concat_fwd_kernel(Streams s, const int32_t* __restrict__ cu_y, int n_seq,
                                                              int64_t total_y, int d_total, T* __restrict__ out) {
  const int chunks = d_total / VEC;
  const int rows_per_block = chunks >= kThreads ? 1 : kThreads / chunks;
  const int local = chunks >= kThreads ? 0 : threadIdx.x / chunks;
  const int c0 = chunks >= kThreads ? threadIdx.x : threadIdx.x % chunks;
  const int cstep = chunks >= kThreads ? kThreads : chunks;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + local;
  if (local >= rows_per_block || row >= total_y) return;
  const int seq = find_seq(cu_y, n_seq, row);
  const int64_t pos = row - cu_y[seq];
  int e = 0;
  for (int c = c0; c < chunks; c += cstep) {
    const int col = c * VEC;
    while (col >= s.offset[e] + s.width[e]) ++e;  // columns only grow: the stream index only grows
    const int32_t start = s.cu[e][seq];
    Vec<T, VEC> v;
    if (pos < s.cu[e][seq + 1] - start) {
      v = *reinterpret_cast<const Vec<T, VEC>*>(static_cast<const T*>(s.ptr[e]) + (start + pos) * s.width[e] +
                                                (col - s.offset[e]));
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) v.v[i] = ak::from_float<T>(0.f);
    }
    *reinterpret_cast<Vec<T, VEC>*>(out + row * d_total + col) = v;
  }
}

// grad_x[r, :] = grad_y[map(r), col_offset : col_offset + width], map(r) = cu_y[i] + r - cu_e[i].
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) gather_cols_kernel(const T* __restrict__ gy, const int32_t* __restrict__ cu_e,
                                                               const int32_t* __restrict__ cu_y, int n_seq,
                                                               int64_t total_e, int width, int d_total, int col_offset,
                                                               T* __restrict__ gx) {
  const int chunks = width / VEC;
  const int rows_per_block = chunks >= kThreads ? 1 : kThreads / chunks;
  const int local = chunks >= kThreads ? 0 : threadIdx.x / chunks;
  const int c0 = chunks >= kThreads ? threadIdx.x : threadIdx.x % chunks;
  const int cstep = chunks >= kThreads ? kThreads : chunks;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * rows_per_block + local;
  if (local >= rows_per_block || r >= total_e) return;
  const int seq = find_seq(cu_e, n_seq, r);
  const int64_t src = cu_y[seq] + (r - cu_e[seq]);
  for (int c = c0; c < chunks; c += cstep) {
    *reinterpret_cast<Vec<T, VEC>*>(gx + r * width + c * VEC) =
        *reinterpret_cast<const Vec<T, VEC>*>(gy + src * d_total + col_offset + c * VEC);
  }
}

// ---------------------------------------------------------------- gathered GEMM (fp32 FMA) ----
constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
enum Mode { FWD = 0, DX = 1, DW = 2 };

struct GemmArgs {
  Streams s;                // FWD: all streams; DX/DW: stream 0 is the stream e (offset = its column offset)
  const int32_t* cu_y;
  int n_seq;
  int64_t M;                // FWD: total_y, DX: total_e, DW: d_out
  int N;                    // FWD: d_out, DX: width_e, DW: width_e
  int64_t K;                // DX: d_out, DW: total_e (FWD walks the streams' widths)
  const void* gy;           // grad_y [total_y, d_out] (DX, DW)
  const void* w;            // weight [d_out, d_total] (FWD, DX)
  const void* bias;         // FWD only, may be null
  int d_total;
  int d_out;
  void* c;                  // output, row stride ldc, column offset c_off
  int ldc;
  int c_off;
};

template <typename T, int MODE>
__global__ void __launch_bounds__(kThreads) gemm_kernel(GemmArgs a) {
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  __shared__ int64_t rowmap[BM > BK ? BM : BK];  // FWD: source row per stream (-1: zero), DX: grad_y row, DW: per K step
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int n0 = blockIdx.x * BN;
  const T* gy = static_cast<const T*>(a.gy);
  const T* w = static_cast<const T*>(a.w);
  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  auto mma_tile = [&]() {
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = As[kk][ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bs[kk][tx * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  };

  if (MODE == FWD) {
    for (int e = 0; e < a.s.count; ++e) {
      const T* x = static_cast<const T*>(a.s.ptr[e]);
      const int width = a.s.width[e];
      if (tid < BM) {
        const int64_t row = m0 + tid;
        int64_t src = -1;
        if (row < a.M) {
          const int seq = find_seq(a.cu_y, a.n_seq, row);
          const int64_t pos = row - a.cu_y[seq];
          const int32_t start = a.s.cu[e][seq];
          if (pos < a.s.cu[e][seq + 1] - start) src = start + pos;
        }
        rowmap[tid] = src;
      }
      __syncthreads();
      for (int k0 = 0; k0 < width; k0 += BK) {
        for (int i = tid; i < BM * BK; i += kThreads) {  // A[m][k] = x[src(m), k0 + k], k fastest
          const int mm = i / BK, kk = i % BK;
          const int64_t src = rowmap[mm];
          As[kk][mm] = (src >= 0 && k0 + kk < width) ? ak::to_float<T>(x[src * width + k0 + kk]) : 0.f;
        }
        for (int i = tid; i < BN * BK; i += kThreads) {  // B[k][n] = W[n, off_e + k0 + k], k fastest
          const int nn = i / BK, kk = i % BK;
          const int n = n0 + nn;
          Bs[kk][nn] = (n < a.N && k0 + kk < width)
                           ? ak::to_float<T>(w[static_cast<int64_t>(n) * a.d_total + a.s.offset[e] + k0 + kk])
                           : 0.f;
        }
        mma_tile();
      }
    }
  } else if (MODE == DX) {
    const int32_t* cu_e = a.s.cu[0];
    if (tid < BM) {
      const int64_t r = m0 + tid;
      int64_t src = -1;
      if (r < a.M) {
        const int seq = find_seq(cu_e, a.n_seq, r);
        src = a.cu_y[seq] + (r - cu_e[seq]);
      }
      rowmap[tid] = src;
    }
    __syncthreads();
    for (int64_t k0 = 0; k0 < a.K; k0 += BK) {
      for (int i = tid; i < BM * BK; i += kThreads) {  // A[m][k] = gy[map(m), k0 + k], k fastest
        const int mm = i / BK, kk = i % BK;
        const int64_t src = rowmap[mm];
        As[kk][mm] = (src >= 0 && k0 + kk < a.K) ? ak::to_float<T>(gy[src * a.d_out + k0 + kk]) : 0.f;
      }
      for (int i = tid; i < BN * BK; i += kThreads) {  // B[k][n] = W[k0 + k, off + n], n fastest
        const int kk = i / BN, nn = i % BN;
        const int n = n0 + nn;
        Bs[kk][nn] = (n < a.N && k0 + kk < a.K) ? ak::to_float<T>(w[(k0 + kk) * a.d_total + a.s.offset[0] + n]) : 0.f;
      }
      mma_tile();
    }
  } else {  // DW
    const int32_t* cu_e = a.s.cu[0];
    const T* x = static_cast<const T*>(a.s.ptr[0]);
    const int width = a.s.width[0];
    for (int64_t k0 = 0; k0 < a.K; k0 += BK) {
      if (tid < BK) {
        const int64_t r = k0 + tid;
        int64_t src = -1;
        if (r < a.K) {
          const int seq = find_seq(cu_e, a.n_seq, r);
          src = a.cu_y[seq] + (r - cu_e[seq]);
        }
        rowmap[tid] = src;
      }
      __syncthreads();
      for (int i = tid; i < BM * BK; i += kThreads) {  // A[m][k] = gy[map(k0 + k), m], m fastest
        const int kk = i / BM, mm = i % BM;
        const int64_t m = m0 + mm;
        const int64_t src = rowmap[kk];
        As[kk][mm] = (src >= 0 && m < a.M) ? ak::to_float<T>(gy[src * a.d_out + m]) : 0.f;
      }
      for (int i = tid; i < BN * BK; i += kThreads) {  // B[k][n] = x[k0 + k, n], n fastest
        const int kk = i / BN, nn = i % BN;
        const int n = n0 + nn;
        Bs[kk][nn] = (n < a.N && k0 + kk < a.K) ? ak::to_float<T>(x[(k0 + kk) * width + n]) : 0.f;
      }
      mma_tile();
    }
  }

  T* c = static_cast<T*>(a.c);
  const T* bias = static_cast<const T*>(a.bias);
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t m = m0 + ty * TM + i;
    if (m >= a.M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + tx * TN + j;
      if (n >= a.N) continue;
      float v = acc[i][j];
      if (MODE == FWD && bias != nullptr) v += ak::to_float<T>(bias[n]);
      c[m * a.ldc + a.c_off + n] = ak::from_float<T>(v);
    }
  }
}

// ---------------------------------------------------------------- tensor-core GEMMs (fp16/bf16) ----
constexpr int WBM = 128, WBN = 128, WBK = 32, WPAD = 8;
constexpr int kTileElems = WBM * (WBK + WPAD);  // >= WBK * (WBM + WPAD): either layout of a tile fits

// Same contract as gemm_kernel<T, MODE> on WMMA 16x16x16 (fp32 accumulation), 128x128 block tile,
// K step 32, 8 warps as 2 x 4 each owning a 64 x 32 patch. Tiles are loaded with 16-byte vectors, so
// every row length and column offset involved must be a multiple of 8 elements and the base pointers
// 16-byte aligned (wmma_ok checks). Shared layouts follow the global ones:
//   A: FWD/DX row-major [m][k] (k contiguous in memory), DW column-major [k][m] (m contiguous);
//   B: FWD column-major [n][k] (W's rows), DX/DW row-major [k][n].
template <typename T, int MODE>
__global__ void __launch_bounds__(kThreads) gemm_wmma_kernel(GemmArgs a) {
  namespace wm = nvcuda::wmma;
  using ALayout = typename std::conditional<MODE == DW, wm::col_major, wm::row_major>::type;
  using BLayout = typename std::conditional<MODE == FWD, wm::col_major, wm::row_major>::type;
  constexpr int lda = MODE == DW ? WBM + WPAD : WBK + WPAD;
  constexpr int ldb = MODE == FWD ? WBK + WPAD : WBN + WPAD;
  __shared__ __align__(32) T As[kTileElems];
  __shared__ __align__(32) T Bs[kTileElems];
  __shared__ __align__(32) float scratch[kThreads / 32][16 * 16];
  __shared__ int64_t rowmap[WBM];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int warp_m = warp / 4, warp_n = warp % 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * WBM;
  const int n0 = blockIdx.x * WBN;
  const T* gy = static_cast<const T*>(a.gy);
  const T* w = static_cast<const T*>(a.w);
  wm::fragment<wm::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wm::fill_fragment(acc[i][j], 0.f);
  Vec<T, 8> zero;
#pragma unroll
  for (int i = 0; i < 8; ++i) zero.v[i] = ak::from_float<T>(0.f);
  auto vstore = [](T* dst, const Vec<T, 8>& v) { *reinterpret_cast<Vec<T, 8>*>(dst) = v; };
  auto vload = [](const T* src) { return *reinterpret_cast<const Vec<T, 8>*>(src); };

  auto mma_tile = [&]() {
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < WBK; kk += 16) {
      wm::fragment<wm::matrix_a, 16, 16, 16, T, ALayout> af[4];
      wm::fragment<wm::matrix_b, 16, 16, 16, T, BLayout> bf[2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = warp_m * 64 + i * 16;
        wm::load_matrix_sync(af[i], MODE == DW ? &As[kk * lda + m] : &As[m * lda + kk], lda);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int n = warp_n * 32 + j * 16;
        wm::load_matrix_sync(bf[j], MODE == FWD ? &Bs[n * ldb + kk] : &Bs[kk * ldb + n], ldb);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wm::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
    }
    __syncthreads();
  };

  if (MODE == FWD) {
    for (int e = 0; e < a.s.count; ++e) {
      const T* x = static_cast<const T*>(a.s.ptr[e]);
      const int width = a.s.width[e];
      const int col0 = a.s.offset[e];
      if (tid < WBM) {
        const int64_t row = m0 + tid;
        int64_t src = -1;
        if (row < a.M) {
          const int seq = find_seq(a.cu_y, a.n_seq, row);
          const int64_t pos = row - a.cu_y[seq];
          const int32_t start = a.s.cu[e][seq];
          if (pos < a.s.cu[e][seq + 1] - start) src = start + pos;
        }
        rowmap[tid] = src;
      }
      __syncthreads();
      for (int k0 = 0; k0 < width; k0 += WBK) {
        for (int i = tid; i < WBM * WBK / 8; i += kThreads) {  // A[m][k] = x[src(m), k0 + k]
          const int mm = i / (WBK / 8), kv = (i % (WBK / 8)) * 8;
          const int64_t src = rowmap[mm];
          vstore(&As[mm * lda + kv], (src >= 0 && k0 + kv < width) ? vload(x + src * width + k0 + kv) : zero);
        }
        for (int i = tid; i < WBN * WBK / 8; i += kThreads) {  // B[n][k] = W[n, col0 + k0 + k]
          const int nn = i / (WBK / 8), kv = (i % (WBK / 8)) * 8;
          const int n = n0 + nn;
          vstore(&Bs[nn * ldb + kv], (n < a.N && k0 + kv < width)
                                         ? vload(w + static_cast<int64_t>(n) * a.d_total + col0 + k0 + kv)
                                         : zero);
        }
        mma_tile();
      }
    }
  } else if (MODE == DX) {
    const int32_t* cu_e = a.s.cu[0];
    if (tid < WBM) {
      const int64_t r = m0 + tid;
      int64_t src = -1;
      if (r < a.M) {
        const int seq = find_seq(cu_e, a.n_seq, r);
        src = a.cu_y[seq] + (r - cu_e[seq]);
      }
      rowmap[tid] = src;
    }
    __syncthreads();
    for (int64_t k0 = 0; k0 < a.K; k0 += WBK) {
      for (int i = tid; i < WBM * WBK / 8; i += kThreads) {  // A[m][k] = gy[map(m), k0 + k]
        const int mm = i / (WBK / 8), kv = (i % (WBK / 8)) * 8;
        const int64_t src = rowmap[mm];
        vstore(&As[mm * lda + kv], (src >= 0 && k0 + kv < a.K) ? vload(gy + src * a.d_out + k0 + kv) : zero);
      }
      for (int i = tid; i < WBK * WBN / 8; i += kThreads) {  // B[k][n] = W[k0 + k, off + n]
        const int kk = i / (WBN / 8), nv = (i % (WBN / 8)) * 8;
        const int n = n0 + nv;
        vstore(&Bs[kk * ldb + nv],
               (n < a.N && k0 + kk < a.K) ? vload(w + (k0 + kk) * a.d_total + a.s.offset[0] + n) : zero);
      }
      mma_tile();
    }
  } else {  // DW
    const int32_t* cu_e = a.s.cu[0];
    const T* x = static_cast<const T*>(a.s.ptr[0]);
    const int width = a.s.width[0];
    for (int64_t k0 = 0; k0 < a.K; k0 += WBK) {
      if (tid < WBK) {
        const int64_t r = k0 + tid;
        int64_t src = -1;
        if (r < a.K) {
          const int seq = find_seq(cu_e, a.n_seq, r);
          src = a.cu_y[seq] + (r - cu_e[seq]);
        }
        rowmap[tid] = src;
      }
      __syncthreads();
      for (int i = tid; i < WBK * WBM / 8; i += kThreads) {  // A^T[k][m] = gy[map(k0 + k), m]
        const int kk = i / (WBM / 8), mv = (i % (WBM / 8)) * 8;
        const int64_t m = m0 + mv;
        const int64_t src = rowmap[kk];
        vstore(&As[kk * lda + mv], (src >= 0 && m < a.M) ? vload(gy + src * a.d_out + m) : zero);
      }
      for (int i = tid; i < WBK * WBN / 8; i += kThreads) {  // B[k][n] = x[k0 + k, n]
        const int kk = i / (WBN / 8), nv = (i % (WBN / 8)) * 8;
        const int n = n0 + nv;
        vstore(&Bs[kk * ldb + nv], (n < a.N && k0 + kk < a.K) ? vload(x + (k0 + kk) * width + n) : zero);
      }
      mma_tile();
    }
  }

  T* c = static_cast<T*>(a.c);
  const T* bias = static_cast<const T*>(a.bias);
  float* sc = scratch[warp];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wm::store_matrix_sync(sc, acc[i][j], 16, wm::mem_row_major);
      __syncwarp();
      for (int t = lane; t < 256; t += 32) {
        const int64_t m = m0 + warp_m * 64 + i * 16 + t / 16;
        const int n = n0 + warp_n * 32 + j * 16 + t % 16;
        if (m < a.M && n < a.N) {
          float v = sc[t];
          if (MODE == FWD && bias != nullptr) v += ak::to_float<T>(bias[n]);
          c[m * a.ldc + a.c_off + n] = ak::from_float<T>(v);
        }
      }
      __syncwarp();
    }
  }
}

// grad_b[c] = sum_r gy[r, c]: a block owns 32 columns, 8 row lanes, fixed-order reduction.
template <typename T>
__global__ void __launch_bounds__(kThreads) column_sum_kernel(const T* __restrict__ gy, int64_t rows, int cols,
                                                              T* __restrict__ out) {
  __shared__ float part[kThreads / 32][32];
  const int lane = threadIdx.x % 32, r0 = threadIdx.x / 32;
  const int col = blockIdx.x * 32 + lane;
  float s = 0.f;
  if (col < cols)
    for (int64_t r = r0; r < rows; r += kThreads / 32) s += ak::to_float<T>(gy[r * cols + col]);
  part[r0][lane] = s;
  __syncthreads();
  if (r0 == 0 && col < cols) {
    float t = 0.f;
    for (int i = 0; i < kThreads / 32; ++i) t += part[i][lane];
    out[col] = ak::from_float<T>(t);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T>
int vec_width(bool ok) {
  return ok ? static_cast<int>(16 / sizeof(T)) : 1;
}

int row_blocks(int64_t rows, int chunks) {
  const int64_t per = chunks >= kThreads ? 1 : kThreads / chunks;
  return static_cast<int>((rows + per - 1) / per);
}

bool fill_streams(Streams& s, const void* const* streams, const int32_t* const* cus, const int* widths, int n) {
  if (n < 1 || n > kMaxStreams) return false;
  s.count = n;
  int off = 0;
  for (int e = 0; e < n; ++e) {
    s.ptr[e] = streams[e];
    s.cu[e] = cus[e];
    s.width[e] = widths[e];
    s.offset[e] = off;
    off += widths[e];
  }
  return true;
}

template <typename T>
cudaError_t launch_concat(const Streams& s, const int32_t* cu_y, int n_seq, int64_t total_y, void* out,
                          cudaStream_t stream) {
  int d_total = 0;
  constexpr int V = 16 / sizeof(T);
  bool vec = aligned16(out);
  for (int e = 0; e < s.count; ++e) {
    d_total += s.width[e];
    vec = vec && aligned16(s.ptr[e]) && s.width[e] % V == 0;
  }
  if (total_y == 0 || d_total == 0) return cudaSuccess;
  if (vec) {
    concat_fwd_kernel<T, V><<<row_blocks(total_y, d_total / V), kThreads, 0, stream>>>(s, cu_y, n_seq, total_y, d_total,
                                                                                     static_cast<T*>(out));
  } else {
    concat_fwd_kernel<T, 1><<<row_blocks(total_y, d_total), kThreads, 0, stream>>>(s, cu_y, n_seq, total_y, d_total,
                                                                                 static_cast<T*>(out));
  }
  return cudaGetLastError();
}

// Whether gemm_wmma_kernel<T, mode> can run these operands (16-byte vectors along every tile row).
bool wmma_ok(const GemmArgs& a, int mode) {
  const auto m8 = [](int64_t v) { return v % 8 == 0; };
  if (mode == FWD) {
    bool ok = aligned16(a.w);
    for (int e = 0; e < a.s.count; ++e) ok = ok && m8(a.s.width[e]) && aligned16(a.s.ptr[e]);
    return ok;
  }
  if (mode == DX)
    return aligned16(a.gy) && aligned16(a.w) && m8(a.d_out) && m8(a.d_total) && m8(a.s.offset[0]) && m8(a.N);
  return aligned16(a.gy) && aligned16(a.s.ptr[0]) && m8(a.d_out) && m8(a.N);
}

// Tensor cores when the element type (fp16/bf16) and the operands allow it; false: use gemm_kernel.
template <typename T>
bool launch_wmma(const GemmArgs& a, int mode, cudaStream_t stream) {
  const dim3 grid((a.N + WBN - 1) / WBN, static_cast<unsigned>((a.M + WBM - 1) / WBM));
  if (!wmma_ok(a, mode) || grid.y > 65535u) return false;
  if (mode == FWD) gemm_wmma_kernel<T, FWD><<<grid, kThreads, 0, stream>>>(a);
  else if (mode == DX) gemm_wmma_kernel<T, DX><<<grid, kThreads, 0, stream>>>(a);
  else gemm_wmma_kernel<T, DW><<<grid, kThreads, 0, stream>>>(a);
  return true;
}
template <>
bool launch_wmma<float>(const GemmArgs&, int, cudaStream_t) {
  return false;
}

template <typename T>
cudaError_t launch_gemm(const GemmArgs& a, int mode, cudaStream_t stream) {
  if (a.M == 0 || a.N == 0) return cudaSuccess;
  if (launch_wmma<T>(a, mode, stream)) return cudaGetLastError();
  const dim3 grid((a.N + BN - 1) / BN, static_cast<unsigned>((a.M + BM - 1) / BM));
  if (grid.y > 65535u) return cudaErrorInvalidValue;
  if (mode == FWD) gemm_kernel<T, FWD><<<grid, kThreads, 0, stream>>>(a);
  else if (mode == DX) gemm_kernel<T, DX><<<grid, kThreads, 0, stream>>>(a);
  else gemm_kernel<T, DW><<<grid, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_gather(const void* gy, const int32_t* cu_e, const int32_t* cu_y, int n_seq, int64_t total_e,
                          int width, int d_total, int col_offset, void* gx, cudaStream_t stream) {
  if (total_e == 0 || width == 0) return cudaSuccess;
  constexpr int V = 16 / sizeof(T);
  const bool vec = aligned16(gy) && aligned16(gx) && width % V == 0 && d_total % V == 0 && col_offset % V == 0;
  if (vec) {
    gather_cols_kernel<T, V><<<row_blocks(total_e, width / V), kThreads, 0, stream>>>(
        static_cast<const T*>(gy), cu_e, cu_y, n_seq, total_e, width, d_total, col_offset, static_cast<T*>(gx));
  } else {
    gather_cols_kernel<T, 1><<<row_blocks(total_e, width), kThreads, 0, stream>>>(
        static_cast<const T*>(gy), cu_e, cu_y, n_seq, total_e, width, d_total, col_offset, static_cast<T*>(gx));
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_column_sum(const void* gy, int64_t rows, int cols, void* out, cudaStream_t stream) {
  if (cols == 0) return cudaSuccess;
  column_sum_kernel<T><<<(cols + 31) / 32, kThreads, 0, stream>>>(static_cast<const T*>(gy), rows, cols,
                                                                   static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

// Most streams one call takes.
extern "C" int ak_multi_encoder_concat_max_streams() { return kMaxStreams; }

// cu_y [n_seq + 1] (device int32) = offsets of the output: L_i = max_e len_{e,i}. cus: host array of
// n_streams device pointers to int32 [n_seq + 1].
extern "C" cudaError_t ak_multi_encoder_concat_output_offsets(const int32_t* const* cus, int n_streams, int n_seq,
                                                              int32_t* cu_y, cudaStream_t stream) {
  Streams s{};
  if (n_streams < 1 || n_streams > kMaxStreams || n_seq < 0) return cudaErrorInvalidValue;
  s.count = n_streams;
  for (int e = 0; e < n_streams; ++e) s.cu[e] = cus[e];
  output_offsets_kernel<<<1, kScanThreads, 0, stream>>>(s, n_seq, cu_y);
  return cudaGetLastError();
}

// out [total_y, sum widths] = the streams concatenated along features (zeros past a stream's length).
// streams / cus / widths: host arrays of n_streams entries (device pointers inside); cu_y: device int32
// [n_seq + 1] with n_seq >= 1.
extern "C" cudaError_t ak_multi_encoder_concat_fwd(const void* const* streams, const int32_t* const* cus,
                                                   const int* widths, int n_streams, const int32_t* cu_y, int n_seq,
                                                   int64_t total_y, void* out, int dtype, cudaStream_t stream) {
  Streams s;
  if (!fill_streams(s, streams, cus, widths, n_streams) || n_seq < 1) return cudaErrorInvalidValue;
  return AK_DISPATCH_DTYPE(dtype, launch_concat, s, cu_y, n_seq, total_y, out, stream);
}

// out [total_y, d_out] = concat @ weight^T (+ bias); weight [d_out, sum widths], bias [d_out] or null.
extern "C" cudaError_t ak_multi_encoder_concat_linear_fwd(const void* const* streams, const int32_t* const* cus,
                                                          const int* widths, int n_streams, const int32_t* cu_y,
                                                          int n_seq, int64_t total_y, const void* weight,
                                                          const void* bias, int d_out, void* out, int dtype,
                                                          cudaStream_t stream) {
  GemmArgs a{};
  if (!fill_streams(a.s, streams, cus, widths, n_streams) || n_seq < 1) return cudaErrorInvalidValue;
  a.cu_y = cu_y;
  a.n_seq = n_seq;
  a.M = total_y;
  a.N = d_out;
  a.w = weight;
  a.bias = bias;
  a.d_total = a.s.offset[n_streams - 1] + widths[n_streams - 1];
  a.d_out = d_out;
  a.c = out;
  a.ldc = d_out;
  return AK_DISPATCH_DTYPE(dtype, launch_gemm, a, static_cast<int>(FWD), stream);
}

// grad_x [total_e, width] of one stream whose features sit at col_offset of the concatenation.
// weight == null: grad_y is [total_y, d_total] and grad_x is its gathered column slice.
// else: grad_y is [total_y, d_out], weight [d_out, d_total], grad_x = gathered(grad_y) @ W[:, slice].
extern "C" cudaError_t ak_multi_encoder_concat_bwd_stream(const void* grad_y, const int32_t* cu_e, const int32_t* cu_y,
                                                          int n_seq, int64_t total_e, int width, int d_total,
                                                          int col_offset, const void* weight, int d_out, void* grad_x,
                                                          int dtype, cudaStream_t stream) {
  if (n_seq < 1) return cudaErrorInvalidValue;
  if (weight == nullptr)
    return AK_DISPATCH_DTYPE(dtype, launch_gather, grad_y, cu_e, cu_y, n_seq, total_e, width, d_total, col_offset,
                             grad_x, stream);
  GemmArgs a{};
  a.s.count = 1;
  a.s.cu[0] = cu_e;
  a.s.width[0] = width;
  a.s.offset[0] = col_offset;
  a.cu_y = cu_y;
  a.n_seq = n_seq;
  a.M = total_e;
  a.N = width;
  a.K = d_out;
  a.gy = grad_y;
  a.w = weight;
  a.d_total = d_total;
  a.d_out = d_out;
  a.c = grad_x;
  a.ldc = width;
  return AK_DISPATCH_DTYPE(dtype, launch_gemm, a, static_cast<int>(DX), stream);
}

// grad_w[:, col_offset : col_offset + width] (row stride d_total) = gathered(grad_y)^T @ x, x [total_e, width].
extern "C" cudaError_t ak_multi_encoder_concat_bwd_weight(const void* grad_y, const void* x, const int32_t* cu_e,
                                                          const int32_t* cu_y, int n_seq, int64_t total_e, int width,
                                                          int d_out, int d_total, int col_offset, void* grad_w,
                                                          int dtype, cudaStream_t stream) {
  if (n_seq < 1) return cudaErrorInvalidValue;
  GemmArgs a{};
  a.s.count = 1;
  a.s.ptr[0] = x;
  a.s.cu[0] = cu_e;
  a.s.width[0] = width;
  a.cu_y = cu_y;
  a.n_seq = n_seq;
  a.M = d_out;
  a.N = width;
  a.K = total_e;
  a.gy = grad_y;
  a.d_total = d_total;
  a.d_out = d_out;
  a.c = grad_w;
  a.ldc = d_total;
  a.c_off = col_offset;
  return AK_DISPATCH_DTYPE(dtype, launch_gemm, a, static_cast<int>(DW), stream);
}

// grad_b [cols] = column sums of grad_y [rows, cols] (fp32 accumulation).
extern "C" cudaError_t ak_multi_encoder_concat_bwd_bias(const void* grad_y, int64_t rows, int cols, void* grad_b,
                                                        int dtype, cudaStream_t stream) {
  return AK_DISPATCH_DTYPE(dtype, launch_column_sum, grad_y, rows, cols, grad_b, stream);
}
