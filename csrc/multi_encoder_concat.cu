// multi_encoder_concat: feature concatenation of E (<= 8) packed streams, and the custom pieces around the
// cuBLAS GEMMs of the fused concat + projection (the GEMMs themselves run in bind_multi_encoder_concat.h).
// Stream e is [total_e, D_e] with offsets cu_e[N+1]; output sequence i has L_i = max_e len_{e,i} rows
// (cu_y). An output row finds its sequence by binary search over cu_y; stream e supplies row
// cu_e[i] + pos, or zeros when pos >= len_{e,i}.
//  * concat: one thread per VEC consecutive output features (16-byte vectors when every width, offset
//    and pointer allows), a block covers whole rows.
//  * gather_rows: a stream's rows of a tensor laid out in output rows (a column block of grad_y for the concat
//    backward; whole rows of grad_y or grad_concat around the projection's GEMMs).
//  * column sums (grad_bias): row splits into fp32 partials, then one pass over them, fixed order.
// No atomics anywhere: deterministic.
#include "common.h"
#include "multi_encoder_concat.h"

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
// cu_y[0] = 0, cu_y[i + 1] = sum_{j <= i} max_e len_{e,j} (ak::scan_offsets).
__global__ void __launch_bounds__(ak::kScanThreads) output_offsets_kernel(Streams s, int n_seq,
                                                                          int32_t* __restrict__ cu_y) {
  ak::scan_offsets(n_seq, [&](int i) {
    int32_t l = 0;
    for (int e = 0; e < s.count; ++e) l = max(l, s.cu[e][i + 1] - s.cu[e][i]);
    return l;
  }, cu_y);
}

// ---------------------------------------------------------------- concat (bandwidth) ----
// This thread's row, first VEC-chunk and chunk stride for rows of `chunks` chunks: a block holds
// kThreads / chunks rows when a row has fewer chunks than threads, else one row with its chunks strided over
// the block. false: the thread has no row (past `rows`).
__device__ __forceinline__ bool row_slot(int chunks, int64_t rows, int& c0, int& cstep, int64_t& row) {
  const int rows_per_block = chunks >= kThreads ? 1 : kThreads / chunks;
  const int local = chunks >= kThreads ? 0 : threadIdx.x / chunks;
  c0 = chunks >= kThreads ? threadIdx.x : threadIdx.x % chunks;
  cstep = chunks >= kThreads ? kThreads : chunks;
  row = static_cast<int64_t>(blockIdx.x) * rows_per_block + local;
  return local < rows_per_block && row < rows;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) concat_fwd_kernel(Streams s, const int32_t* __restrict__ cu_y, int n_seq,
                                                              int64_t total_y, int d_total, T* __restrict__ out) {
  const int chunks = d_total / VEC;
  int c0, cstep;
  int64_t row;
  if (!row_slot(chunks, total_y, c0, cstep, row)) return;
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
  int c0, cstep;
  int64_t r;
  if (!row_slot(chunks, total_e, c0, cstep, r)) return;
  const int seq = find_seq(cu_e, n_seq, r);
  const int64_t src = cu_y[seq] + (r - cu_e[seq]);
  for (int c = c0; c < chunks; c += cstep) {
    *reinterpret_cast<Vec<T, VEC>*>(gx + r * width + c * VEC) =
        *reinterpret_cast<const Vec<T, VEC>*>(gy + src * d_total + col_offset + c * VEC);
  }
}

// ---------------------------------------------------------------- column sums (grad_bias) ----
// Pass 1: block (column tile of 32, row split) sums its rows of 32 columns with 8 row lanes, in a fixed
// order, into fp32 partials [splits, cols]; pass 2 (same kernel, one split, fp32 input) sums the partials.
// The row splits give enough blocks to fill the GPU; no atomics: deterministic.
template <typename T, typename O>
__global__ void __launch_bounds__(kThreads) column_sum_kernel(const T* __restrict__ src, int64_t rows, int cols,
                                                              int64_t rows_per_split, O* __restrict__ out) {
  __shared__ float part[kThreads / 32][32];
  const int lane = threadIdx.x % 32, r0 = threadIdx.x / 32;
  const int col = blockIdx.x * 32 + lane;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t end = begin + rows_per_split < rows ? begin + rows_per_split : rows;
  float s = 0.f;
  if (col < cols)
    for (int64_t r = begin + r0; r < end; r += kThreads / 32) s += ak::to_float<T>(src[r * cols + col]);
  part[r0][lane] = s;
  __syncthreads();
  if (r0 == 0 && col < cols) {
    float t = 0.f;
    for (int i = 0; i < kThreads / 32; ++i) t += part[i][lane];
    out[static_cast<int64_t>(blockIdx.y) * cols + col] = ak::from_float<O>(t);
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
cudaError_t launch_column_sum(const void* gy, int64_t rows, int cols, float* partials, int splits, void* out,
                              cudaStream_t stream) {
  if (cols == 0) return cudaSuccess;
  if (splits < 1) return cudaErrorInvalidValue;
  const int64_t per_split = (rows + splits - 1) / splits;
  const dim3 grid1((cols + 31) / 32, splits);
  column_sum_kernel<T, float><<<grid1, kThreads, 0, stream>>>(static_cast<const T*>(gy), rows, cols,
                                                               per_split > 0 ? per_split : 1, partials);
  column_sum_kernel<float, T><<<dim3((cols + 31) / 32, 1), kThreads, 0, stream>>>(partials, splits, cols, splits,
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
  output_offsets_kernel<<<1, ak::kScanThreads, 0, stream>>>(s, n_seq, cu_y);
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

// dst[r, :] = src[map(r), col_offset : col_offset + width] with map(r) = cu_y[i] + r - cu_e[i] (r in sequence i):
// the rows of src (a [total_y, src_cols] tensor in the output's row order) that belong to one stream's rows.
// Serves the concat backward (a stream's column block of grad_y) and the gathers around the cuBLAS GEMMs.
extern "C" cudaError_t ak_multi_encoder_concat_gather_rows(const void* src, const int32_t* cu_e, const int32_t* cu_y,
                                                           int n_seq, int64_t total_e, int width, int src_cols,
                                                           int col_offset, void* dst, int dtype, cudaStream_t stream) {
  if (n_seq < 1) return cudaErrorInvalidValue;
  return AK_DISPATCH_DTYPE(dtype, launch_gather, src, cu_e, cu_y, n_seq, total_e, width, src_cols, col_offset, dst,
                           stream);
}

// Row splits for ak_multi_encoder_concat_column_sum: about 4 blocks per SM of a large GPU, at least 256 rows each.
extern "C" int ak_multi_encoder_concat_column_sum_splits(int64_t rows, int cols) {
  const int64_t col_tiles = (cols + 31) / 32;
  int64_t splits = (512 + col_tiles - 1) / col_tiles;
  const int64_t by_rows = (rows + 255) / 256;
  if (splits > by_rows) splits = by_rows;
  if (splits > 1024) splits = 1024;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

// out [cols] = column sums of src [rows, cols] (fp32 accumulation, fixed order); partials: device fp32
// [splits, cols] scratch.
extern "C" cudaError_t ak_multi_encoder_concat_column_sum(const void* src, int64_t rows, int cols, float* partials,
                                                          int splits, void* out, int dtype, cudaStream_t stream) {
  return AK_DISPATCH_DTYPE(dtype, launch_column_sum, src, rows, cols, partials, splits, out, stream);
}
