// Per-plane 3x3 convolutions (stride 1, zero padding 1) for the light attentions' CPU training path.
//
// Every H x W plane has its own 3x3 kernel. Each plane is first copied into a zero-bordered
// (H + 2) x (W + 2) buffer that stays in L1, so the inner loops have no edge cases and vectorise;
// planes are shared out over the threads with OpenMP (the same libgomp that PyTorch loaded).
// Built and loaded by lai_bench/models/native.py; tested against PyTorch's convs in tests/test_native.py.
#include <vector>

namespace {

template <typename T>
void pad_plane(const T* x, T* pad, long H, long W) {
  const long P = W + 2;
  for (long i = 0; i < H; ++i) {
    T* row = pad + (i + 1) * P + 1;
    const T* src = x + i * W;
#pragma omp simd
    for (long j = 0; j < W; ++j) row[j] = src[j];
  }
}

// out = conv(plane, k) (+ addend). WT is W when known at compile time (0: use W): the loops then have
// a fixed trip count. `out` may be `addend` (each element is read before it is written).
template <typename T, long WT>
void conv_plane(const T* pad, const T* k, const T* addend, T* out, long H, long W_) {
  const long W = WT ? WT : W_, P = W + 2;
  const T k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
  for (long i = 0; i < H; ++i) {
    const T* r0 = pad + i * P;
    const T* r1 = r0 + P;
    const T* r2 = r1 + P;
    T* o = out + i * W;
    if (addend) {
      const T* a = addend + i * W;
#pragma omp simd
      for (long j = 0; j < W; ++j)
        o[j] = a[j] + k0 * r0[j] + k1 * r0[j + 1] + k2 * r0[j + 2] + k3 * r1[j] + k4 * r1[j + 1]
             + k5 * r1[j + 2] + k6 * r2[j] + k7 * r2[j + 1] + k8 * r2[j + 2];
    } else {
#pragma omp simd
      for (long j = 0; j < W; ++j)
        o[j] = k0 * r0[j] + k1 * r0[j + 1] + k2 * r0[j + 2] + k3 * r1[j] + k4 * r1[j + 1]
             + k5 * r1[j + 2] + k6 * r2[j] + k7 * r2[j + 1] + k8 * r2[j + 2];
    }
  }
}

// gk[t] = sum_ij g[i, j] * pad[i + t / 3, j + t % 3]: nine sums over chunks of C columns, each chunk
// held in vector accumulators.
template <typename T, int C>
void kernel_grad_plane(const T* g, const T* pad, T* gk, long H, long W) {
  const long P = W + 2;
  T acc[9][C];
  for (int t = 0; t < 9; ++t)
    for (int j = 0; j < C; ++j) acc[t][j] = 0;
  for (long i = 0; i < H; ++i) {
    const T* r0 = pad + i * P;
    const T* r1 = r0 + P;
    const T* r2 = r1 + P;
    const T* gr = g + i * W;
    for (long j0 = 0; j0 < W; j0 += C) {
      const int n = W - j0 < C ? int(W - j0) : C;
#pragma omp simd
      for (int j = 0; j < n; ++j) {
        const T v = gr[j0 + j];
        const long q = j0 + j;
        acc[0][j] += v * r0[q]; acc[1][j] += v * r0[q + 1]; acc[2][j] += v * r0[q + 2];
        acc[3][j] += v * r1[q]; acc[4][j] += v * r1[q + 1]; acc[5][j] += v * r1[q + 2];
        acc[6][j] += v * r2[q]; acc[7][j] += v * r2[q + 1]; acc[8][j] += v * r2[q + 2];
      }
    }
  }
  for (int t = 0; t < 9; ++t) {
    T s = 0;
    for (int j = 0; j < C; ++j) s += acc[t][j];
    gk[t] = s;
  }
}

template <typename T>
void depthwise3x3(const T* x, const T* kernels, const T* addend, T* out, long planes, long H, long W,
                  int flip, int threads) {
  const long HW = H * W;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> pad((H + 2) * (W + 2), T(0));
#pragma omp for schedule(static)
    for (long n = 0; n < planes; ++n) {
      T k[9];  // flip: the kernel turned by 180 degrees (the input gradient of a 'same' conv)
      for (int t = 0; t < 9; ++t) k[t] = kernels[n * 9 + (flip ? 8 - t : t)];
      pad_plane(x + n * HW, pad.data(), H, W);
      const T* a = addend ? addend + n * HW : nullptr;
      T* o = out + n * HW;
      if (W == 8) conv_plane<T, 8>(pad.data(), k, a, o, H, W);
      else if (W == 16) conv_plane<T, 16>(pad.data(), k, a, o, H, W);
      else if (W == 32) conv_plane<T, 32>(pad.data(), k, a, o, H, W);
      else conv_plane<T, 0>(pad.data(), k, a, o, H, W);
    }
  }
}

template <typename T>
void depthwise3x3_kernel_grad(const T* grad, const T* x, T* grad_kernels, long planes, long H, long W, int threads) {
  const long HW = H * W;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> pad((H + 2) * (W + 2), T(0));
#pragma omp for schedule(static)
    for (long n = 0; n < planes; ++n) {
      pad_plane(x + n * HW, pad.data(), H, W);
      if (W % 16 == 0) kernel_grad_plane<T, 16>(grad + n * HW, pad.data(), grad_kernels + n * 9, H, W);
      else kernel_grad_plane<T, 8>(grad + n * HW, pad.data(), grad_kernels + n * 9, H, W);
    }
  }
}

}  // namespace

extern "C" {
void depthwise3x3_f32(const float* x, const float* k, const float* addend, float* out, long planes, long h,
                      long w, int flip, int threads) {
  depthwise3x3(x, k, addend, out, planes, h, w, flip, threads);
}
void depthwise3x3_f64(const double* x, const double* k, const double* addend, double* out, long planes, long h,
                      long w, int flip, int threads) {
  depthwise3x3(x, k, addend, out, planes, h, w, flip, threads);
}
void depthwise3x3_kernel_grad_f32(const float* g, const float* x, float* gk, long planes, long h, long w,
                                  int threads) {
  depthwise3x3_kernel_grad(g, x, gk, planes, h, w, threads);
}
void depthwise3x3_kernel_grad_f64(const double* g, const double* x, double* gk, long planes, long h, long w,
                                  int threads) {
  depthwise3x3_kernel_grad(g, x, gk, planes, h, w, threads);
}
}
