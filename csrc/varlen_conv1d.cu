// varlen_conv1d: channels-last conv1d over packed sequences as gathers around cuBLAS GEMMs (the GEMMs run in
// bind_varlen_conv1d.h through at::mm / at::addmm; this file holds the custom kernels around them).
//
//   im2col   col[t, j * C_in + c] = x[src_j(t), c], 0 where tap j falls in a sequence's zero padding
//            forward: y = col @ W (+ bias, GELU);  grad_w = grad_pre^T @ col
//   col2im   dx[i, c] = sum over the taps j that read frame i of gcol[t_j(i), j * C_in + c], gcol = grad_pre @ W^T
//   gelu_grad  grad_pre = grad_y * gelu'(pre)
//
// src_j(t) = start + t_local * stride - pad + j for output token t of a sequence starting at frame start; frame
// i (local index) is read by tap j from token (i + pad - j) / stride when that divides exactly and lies in the
// sequence's output. Rows map to sequences by binary search over the offsets. col2im sums its taps in a fixed
// order in fp32 and every output element is written by one thread: deterministic, no atomics.
#include "common.h"
#include "varlen_conv1d.h"

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;
constexpr float kSqrtHalf = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f;

// largest s < n_seq with cu[s] <= idx (n_seq >= 1)
__device__ __forceinline__ int find_seq(const int32_t* __restrict__ cu, int n_seq, int64_t idx) {
  int lo = 0, hi = n_seq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= idx) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// one block per output token (grid-stride): the k taps of C_in channels
template <typename T>
__global__ void __launch_bounds__(kThreads) im2col_kernel(const T* __restrict__ x, const int32_t* __restrict__ cu_x,
                                                          const int32_t* __restrict__ cu_y, int n_seq, int64_t total_y,
                                                          int c_in, int k, int stride, int pad, T* __restrict__ col) {
  const int64_t width = static_cast<int64_t>(k) * c_in;
  for (int64_t t = blockIdx.x; t < total_y; t += gridDim.x) {
    const int s = find_seq(cu_y, n_seq, t);
    const int64_t start = cu_x[s], len = cu_x[s + 1] - start;
    const int64_t base = (t - cu_y[s]) * stride - pad;
    for (int64_t e = threadIdx.x; e < width; e += blockDim.x) {
      const int64_t j = e / c_in, c = e - j * c_in;
      const int64_t pos = base + j;
      col[t * width + e] = (pos >= 0 && pos < len) ? x[(start + pos) * c_in + c] : ak::from_float<T>(0.f);
    }
  }
}

// one block per input frame (grid-stride): its C_in channels, summed over the taps that read it
template <typename T>
__global__ void __launch_bounds__(kThreads) col2im_kernel(const T* __restrict__ gcol, const int32_t* __restrict__ cu_x,
                                                          const int32_t* __restrict__ cu_y, int n_seq, int64_t total,
                                                          int c_in, int k, int stride, int pad, T* __restrict__ dx) {
  const int64_t width = static_cast<int64_t>(k) * c_in;
  for (int64_t i = blockIdx.x; i < total; i += gridDim.x) {
    const int s = find_seq(cu_x, n_seq, i);
    const int64_t local = i - cu_x[s];
    const int64_t y0 = cu_y[s], out_len = cu_y[s + 1] - y0;
    for (int c = threadIdx.x; c < c_in; c += blockDim.x) {
      float acc = 0.f;
      for (int j = 0; j < k; ++j) {
        const int64_t num = local + pad - j;
        if (num < 0 || num % stride != 0 || num / stride >= out_len) continue;
        acc += ak::to_float<T>(gcol[(y0 + num / stride) * width + static_cast<int64_t>(j) * c_in + c]);
      }
      dx[i * c_in + c] = ak::from_float<T>(acc);
    }
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

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks); }

template <typename T>
cudaError_t launch_im2col(const void* x, const int32_t* cu_x, const int32_t* cu_y, int n_seq, int64_t total_y,
                          int c_in, int k, int stride, int pad, void* col, cudaStream_t stream) {
  if (total_y == 0 || c_in == 0) return cudaSuccess;
  im2col_kernel<T><<<blocks_for(total_y), kThreads, 0, stream>>>(static_cast<const T*>(x), cu_x, cu_y, n_seq, total_y,
                                                                 c_in, k, stride, pad, static_cast<T*>(col));
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_col2im(const void* gcol, const int32_t* cu_x, const int32_t* cu_y, int n_seq, int64_t total,
                          int c_in, int k, int stride, int pad, void* dx, cudaStream_t stream) {
  if (total == 0 || c_in == 0) return cudaSuccess;
  col2im_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const T*>(gcol), cu_x, cu_y, n_seq, total,
                                                               c_in, k, stride, pad, static_cast<T*>(dx));
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

// cu_y[i + 1] - cu_y[i] = max(0, (len_i + 2 * padding - k) // stride + 1), 0 for an empty sequence
// (ak::scan_offsets)
__global__ void __launch_bounds__(ak::kScanThreads) output_offsets_kernel(const int32_t* __restrict__ cu_x, int n_seq,
                                                                          int k, int stride, int padding,
                                                                          int32_t* __restrict__ cu_y) {
  ak::scan_offsets(n_seq, [&](int i) {
    const int64_t len = cu_x[i + 1] - cu_x[i];
    const int64_t span = len + 2 * static_cast<int64_t>(padding) - k;
    return len == 0 || span < 0 ? 0 : static_cast<int32_t>(span / stride + 1);
  }, cu_y);
}

}  // namespace

// cu_y int32 [n_seq + 1] = offsets of the conv output tokens of each sequence, in one launch.
extern "C" cudaError_t ak_varlen_conv1d_output_offsets(const int32_t* cu_x, int32_t n_seq, int32_t k, int32_t stride,
                                                       int32_t padding, int32_t* cu_y, cudaStream_t stream) {
  if (n_seq < 0 || k < 1 || stride < 1 || padding < 0) return cudaErrorInvalidValue;
  output_offsets_kernel<<<1, ak::kScanThreads, 0, stream>>>(cu_x, n_seq, k, stride, padding, cu_y);
  return cudaGetLastError();
}

// col [total_y, k * c_in] = the k taps of every output token (zeros at the sequences' zero padding);
// x [total, c_in]; cu_x / cu_y int32 [n_seq + 1] device offsets of the input frames and output tokens.
extern "C" cudaError_t ak_varlen_conv1d_im2col(const void* x, const int32_t* cu_x, const int32_t* cu_y, int32_t n_seq,
                                               int64_t total_y, int32_t c_in, int32_t k, int32_t stride,
                                               int32_t padding, void* col, int32_t dtype, cudaStream_t stream) {
  if (n_seq < 1 || k < 1 || stride < 1) return cudaErrorInvalidValue;
  return AK_DISPATCH_DTYPE(dtype, launch_im2col, x, cu_x, cu_y, n_seq, total_y, c_in, k, stride, padding, col,
                           stream);
}

// grad_x [total, c_in] = the transposed im2col of gcol [total_y, k * c_in] (each frame sums the taps reading it).
extern "C" cudaError_t ak_varlen_conv1d_col2im(const void* gcol, const int32_t* cu_x, const int32_t* cu_y,
                                               int32_t n_seq, int64_t total, int32_t c_in, int32_t k, int32_t stride,
                                               int32_t padding, void* grad_x, int32_t dtype, cudaStream_t stream) {
  if (n_seq < 1 || k < 1 || stride < 1) return cudaErrorInvalidValue;
  return AK_DISPATCH_DTYPE(dtype, launch_col2im, gcol, cu_x, cu_y, n_seq, total, c_in, k, stride, padding, grad_x,
                           stream);
}

// out = grad_y * gelu'(pre), n elements.
extern "C" cudaError_t ak_varlen_conv1d_gelu_grad(const void* grad_y, const void* pre, void* out, int64_t n,
                                                  int32_t dtype, cudaStream_t stream) {
  return AK_DISPATCH_DTYPE(dtype, launch_gelu_grad, grad_y, pre, out, n, stream);
}
