// weighted_layer_sum: y = sum_j softmax(logits)_j * layers[j] over k same-shape tensors (k <= 64).
// The k layer pointers travel by value in the kernel arguments (never stacked). Bandwidth kernels over
// the flattened elements: one thread owns VEC consecutive elements (16-byte vectors when every pointer
// is 16-byte aligned and n % VEC == 0). Every block recomputes the softmax of the k logits into shared
// memory (k scalars; cheaper than a launch).
// Backward: pass 1 reads grad_y and the layers once, writes w_j * grad_y into the layer gradients when
// asked and per-block partial dots <grad_y, layers[j]> (fixed grid => deterministic); pass 2 (one block)
// reduces the partials in a fixed order and applies the softmax Jacobian.
#include "common.h"
#include "weighted_layer_sum.h"

namespace {

constexpr int kMaxLayers = 64;
constexpr int kThreads = 256;
constexpr int kMaxBwdBlocks = 1024;  // partial dots per layer
constexpr int kChunk = 8;            // layers reduced together in the backward

struct LayerPtrs {
  const void* p[kMaxLayers];
};
struct GradPtrs {
  void* p[kMaxLayers];
};

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

__device__ __forceinline__ float load_logit(const void* logits, int dt, int j) {
  if (dt == AK_FLOAT16) return __half2float(static_cast<const __half*>(logits)[j]);
  if (dt == AK_BFLOAT16) return __bfloat162float(static_cast<const __nv_bfloat16*>(logits)[j]);
  return static_cast<const float*>(logits)[j];
}

// softmax(logits) into w[0..k) (shared); every thread of the block returns after the barrier.
__device__ __forceinline__ void block_softmax(const void* logits, int dt, int k, float* w) {
  if (threadIdx.x < k) w[threadIdx.x] = load_logit(logits, dt, threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = -INFINITY;
    for (int j = 0; j < k; ++j) m = fmaxf(m, w[j]);
    float s = 0.f;
    for (int j = 0; j < k; ++j) {
      w[j] = __expf(w[j] - m);
      s += w[j];
    }
    const float inv = 1.f / s;
    for (int j = 0; j < k; ++j) w[j] *= inv;
  }
  __syncthreads();
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) wls_fwd_kernel(LayerPtrs layers, int k, const void* logits, int logits_dt,
                                                           T* __restrict__ out, int64_t nvec) {
  __shared__ float w[kMaxLayers];
  block_softmax(logits, logits_dt, k, w);
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < nvec;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = 0.f;
#pragma unroll 4
    for (int j = 0; j < k; ++j) {
      const Vec<T, VEC> x = reinterpret_cast<const Vec<T, VEC>*>(layers.p[j])[v];
      const float wj = w[j];
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = fmaf(wj, ak::to_float<T>(x.v[e]), acc[e]);
    }
    Vec<T, VEC> o;
#pragma unroll
    for (int e = 0; e < VEC; ++e) o.v[e] = ak::from_float<T>(acc[e]);
    reinterpret_cast<Vec<T, VEC>*>(out)[v] = o;
  }
}

// Deterministic block sum of kChunk values per thread; thread 0 gets the totals in `total`.
__device__ __forceinline__ void block_sum_chunk(float (&vals)[kChunk], float (*scratch)[kThreads / 32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int c = 0; c < kChunk; ++c) {
    float v = vals[c];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[c][warp] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      float s = 0.f;
      for (int i = 0; i < kThreads / 32; ++i) s += scratch[c][i];
      vals[c] = s;
    }
  }
  __syncthreads();
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) wls_bwd_kernel(LayerPtrs layers, GradPtrs grads, bool need_grads, int k,
                                                           const void* logits, int logits_dt,
                                                           const T* __restrict__ grad_y, float* __restrict__ partials,
                                                           int64_t nvec) {
  __shared__ float w[kMaxLayers];
  __shared__ float scratch[kChunk][kThreads / 32];
  block_softmax(logits, logits_dt, k, w);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int j0 = 0; j0 < k; j0 += kChunk) {
    float dots[kChunk];
#pragma unroll
    for (int c = 0; c < kChunk; ++c) dots[c] = 0.f;
    for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < nvec; v += stride) {
      const Vec<T, VEC> g = reinterpret_cast<const Vec<T, VEC>*>(grad_y)[v];
      float gf[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) gf[e] = ak::to_float<T>(g.v[e]);
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        const int j = j0 + c;
        if (j < k) {
          const Vec<T, VEC> x = reinterpret_cast<const Vec<T, VEC>*>(layers.p[j])[v];
#pragma unroll
          for (int e = 0; e < VEC; ++e) dots[c] = fmaf(gf[e], ak::to_float<T>(x.v[e]), dots[c]);
          if (need_grads) {
            Vec<T, VEC> o;
#pragma unroll
            for (int e = 0; e < VEC; ++e) o.v[e] = ak::from_float<T>(w[j] * gf[e]);
            reinterpret_cast<Vec<T, VEC>*>(grads.p[j])[v] = o;
          }
        }
      }
    }
    block_sum_chunk(dots, scratch);
    if (threadIdx.x == 0) {
#pragma unroll
      for (int c = 0; c < kChunk; ++c)
        if (j0 + c < k) partials[static_cast<int64_t>(blockIdx.x) * k + j0 + c] = dots[c];
    }
  }
}

// One block: g_j = sum_b partials[b, j]; grad_logits_j = w_j * (g_j - sum_i w_i g_i).
__global__ void __launch_bounds__(kThreads) wls_grad_logits_kernel(const float* __restrict__ partials, int blocks, int k,
                                                                   const void* logits, int logits_dt,
                                                                   void* grad_logits) {
  __shared__ float w[kMaxLayers];
  __shared__ float g[kMaxLayers];
  __shared__ float scratch[kChunk][kThreads / 32];
  block_softmax(logits, logits_dt, k, w);
  for (int j0 = 0; j0 < k; j0 += kChunk) {
    float vals[kChunk];
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      vals[c] = 0.f;
      if (j0 + c < k)
        for (int b = threadIdx.x; b < blocks; b += blockDim.x) vals[c] += partials[static_cast<int64_t>(b) * k + j0 + c];
    }
    block_sum_chunk(vals, scratch);
    if (threadIdx.x == 0) {
#pragma unroll
      for (int c = 0; c < kChunk; ++c)
        if (j0 + c < k) g[j0 + c] = vals[c];
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float wg = 0.f;
    for (int j = 0; j < k; ++j) wg += w[j] * g[j];
    for (int j = 0; j < k; ++j) {
      const float v = w[j] * (g[j] - wg);
      if (logits_dt == AK_FLOAT16) static_cast<__half*>(grad_logits)[j] = __float2half_rn(v);
      else if (logits_dt == AK_BFLOAT16) static_cast<__nv_bfloat16*>(grad_logits)[j] = __float2bfloat16_rn(v);
      else static_cast<float*>(grad_logits)[j] = v;
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// enough blocks to fill every SM (grid-stride loops beyond that: the per-block softmax is amortized)
int fwd_blocks(int64_t nvec) {
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t cap = static_cast<int64_t>(sms) * (2048 / kThreads);
  const int64_t b = (nvec + kThreads - 1) / kThreads;
  return static_cast<int>(b < cap ? (b > 0 ? b : 1) : cap);
}

int bwd_blocks(int64_t nvec) {
  const int64_t b = (nvec + kThreads - 1) / kThreads;
  return static_cast<int>(b < kMaxBwdBlocks ? (b > 0 ? b : 1) : kMaxBwdBlocks);
}

template <typename T>
cudaError_t launch_fwd(const void* const* layers, int k, const void* logits, int logits_dt, void* out, int64_t n,
                       cudaStream_t stream) {
  LayerPtrs ptrs;
  constexpr int VEC = 16 / sizeof(T);
  bool vec = n % VEC == 0 && aligned16(out);
  for (int j = 0; j < k; ++j) {
    ptrs.p[j] = layers[j];
    vec = vec && aligned16(layers[j]);
  }
  if (vec) {
    wls_fwd_kernel<T, VEC><<<fwd_blocks(n / VEC), kThreads, 0, stream>>>(ptrs, k, logits, logits_dt,
                                                                       static_cast<T*>(out), n / VEC);
  } else {
    wls_fwd_kernel<T, 1><<<fwd_blocks(n), kThreads, 0, stream>>>(ptrs, k, logits, logits_dt, static_cast<T*>(out), n);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const void* const* layers, int k, const void* logits, int logits_dt, const void* grad_y,
                       void* const* grad_layers, void* grad_logits, float* workspace, int64_t n,
                       cudaStream_t stream) {
  LayerPtrs ptrs;
  GradPtrs gptrs;
  constexpr int VEC = 16 / sizeof(T);
  const bool need = grad_layers != nullptr;
  bool vec = n % VEC == 0 && aligned16(grad_y);
  for (int j = 0; j < k; ++j) {
    ptrs.p[j] = layers[j];
    gptrs.p[j] = need ? grad_layers[j] : nullptr;
    vec = vec && aligned16(layers[j]) && (!need || aligned16(grad_layers[j]));
  }
  const int64_t nvec = vec ? n / VEC : n;
  const int blocks = bwd_blocks(nvec);
  if (vec) {
    wls_bwd_kernel<T, VEC><<<blocks, kThreads, 0, stream>>>(ptrs, gptrs, need, k, logits, logits_dt,
                                                           static_cast<const T*>(grad_y), workspace, nvec);
  } else {
    wls_bwd_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(ptrs, gptrs, need, k, logits, logits_dt,
                                                         static_cast<const T*>(grad_y), workspace, nvec);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  wls_grad_logits_kernel<<<1, kThreads, 0, stream>>>(workspace, blocks, k, logits, logits_dt, grad_logits);
  return cudaGetLastError();
}

}  // namespace

// Most layers one call takes.
extern "C" int ak_weighted_layer_sum_max_layers() { return kMaxLayers; }

// fp32 elements of the backward workspace for k layers.
extern "C" int64_t ak_weighted_layer_sum_workspace_floats(int k) { return static_cast<int64_t>(kMaxBwdBlocks) * k; }

// out[n] = sum_j softmax(logits)_j * layers[j][n]; layers: k (<= 64) device pointers (host array) of n
// elements of `dtype`; logits: k elements of `logits_dtype`. n >= 1.
extern "C" cudaError_t ak_weighted_layer_sum_fwd(const void* const* layers, int k, const void* logits, int logits_dtype,
                                                 void* out, int64_t n, int dtype, cudaStream_t stream) {
  if (k < 1 || k > kMaxLayers || n < 1) return cudaErrorInvalidValue;
  return AK_DISPATCH_DTYPE(dtype, launch_fwd, layers, k, logits, logits_dtype, out, n, stream);
}

// grad_logits[k] (logits' dtype) and, when grad_layers != nullptr, grad_layers[j] = w_j * grad_y.
// workspace: ak_weighted_layer_sum_workspace_floats(k) fp32 elements. n >= 1.
extern "C" cudaError_t ak_weighted_layer_sum_bwd(const void* const* layers, int k, const void* logits, int logits_dtype,
                                                 const void* grad_y, void* const* grad_layers, void* grad_logits,
                                                 float* workspace, int64_t n, int dtype, cudaStream_t stream) {
  if (k < 1 || k > kMaxLayers || n < 1) return cudaErrorInvalidValue;
  return AK_DISPATCH_DTYPE(dtype, launch_bwd, layers, k, logits, logits_dtype, grad_y, grad_layers, grad_logits,
                           workspace, n, stream);
}
