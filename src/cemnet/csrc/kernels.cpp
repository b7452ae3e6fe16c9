// CPU kernels for two of CEMNet's layers (cemnet/native.py builds and loads them):
// the noise factors of the approximated Leaky ReLU and dropout (noise_factor; and, for
// comparing the twins with the same generator, the CNNs' dropout masks: keep_mask), and
// the batch norm of the real and imaginary parts (channel_sums, channel_affine).
//
// out[i] = (1 + a z1[i]) (1 + b z2[i]), with z1[i], z2[i] independent N(0, 1):
// the Box-Muller pair (the transform PyTorch's CPU normal_ uses, on 24-bit
// uniforms) of the two 32-bit words of Threefry-2x32-20 (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011; JAX's default
// generator) at counter i and a 64-bit key.
//
// Why not PyTorch's generator: its CPU draws run serially on one Mersenne
// Twister, 5-7 ns per Gaussian on the project's machine, two Gaussians per
// activation number; a counter-based generator needs no state, so every
// number is computed independently, in vectorised blocks, on all of
// PyTorch's intra-op threads (at::parallel_for: the threads PyTorch's own
// kernels use, so no extra thread competes with them for a core). The result
// depends only on the key and the index, not on the thread count.
//
// Built on first use by cemnet/native.py (torch.utils.cpp_extension); the kernels
// work on raw pointers, so they include no more of PyTorch than its thread pool.

#include <ATen/Parallel.h>
#include <math.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

namespace {

// Eight 32-bit lanes (GCC/Clang vector extension: AVX2 on x86, two NEON registers on ARM).
typedef uint32_t Words __attribute__((vector_size(32)));
constexpr int64_t kWidth = 8;
constexpr int64_t kLanes = 64;  // numbers per block: eight vectors of counters
constexpr int64_t kGrain = 64;  // blocks per task of at::parallel_for (4096 numbers)

template <int R>
inline void mix(Words& x0, Words& x1) {
  x0 += x1;
  x1 = ((x1 << R) | (x1 >> (32 - R))) ^ x0;
}

// Threefry-2x32 with 20 rounds on eight counters (x0, x1) in place, kept in registers.
inline void threefry2x32_20(Words& x0, Words& x1, uint32_t k0, uint32_t k1) {
  const uint32_t ks[3] = {k0, k1, 0x1BD11BDAu ^ k0 ^ k1};
  x0 += ks[0];
  x1 += ks[1];
#pragma GCC unroll 5
  for (uint32_t group = 0; group < 5; ++group) {  // 5 groups of 4 rounds, a key injection after each
    if (group % 2 == 0) {
      mix<13>(x0, x1); mix<15>(x0, x1); mix<26>(x0, x1); mix<6>(x0, x1);
    } else {
      mix<17>(x0, x1); mix<29>(x0, x1); mix<16>(x0, x1); mix<24>(x0, x1);
    }
    x0 += ks[(group + 1) % 3];
    x1 += ks[(group + 2) % 3] + group + 1;
  }
}

// The words of the kLanes counters first, first + 1, ... under `key`.
inline void counter_block(uint64_t first, uint32_t* words0, uint32_t* words1, uint64_t key) {
  for (int64_t vector = 0; vector < kLanes / kWidth; ++vector) {
    Words x0, x1;
    for (int64_t lane = 0; lane < kWidth; ++lane) {
      const uint64_t counter = first + uint64_t(vector * kWidth + lane);
      x0[lane] = uint32_t(counter);
      x1[lane] = uint32_t(counter >> 32);
    }
    threefry2x32_20(x0, x1, uint32_t(key), uint32_t(key >> 32));
    __builtin_memcpy(words0 + vector * kWidth, &x0, sizeof(Words));
    __builtin_memcpy(words1 + vector * kWidth, &x1, sizeof(Words));
  }
}

// Calls fill(start, count, x0, x1) for every block of [0, n), in parallel, with the
// words of counters first + start, first + start + 1, ... The fills capture by value: in
// the OpenMP-outlined loop, GCC does not vectorise through captured references.
template <typename Fill>
void for_each_block(int64_t n, uint64_t first, uint64_t key, const Fill& fill) {
  const int64_t blocks = (n + kLanes - 1) / kLanes;
  at::parallel_for(0, blocks, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) uint32_t x0[kLanes];
    alignas(64) uint32_t x1[kLanes];
    for (int64_t block = begin; block < end; ++block) {
      const int64_t start = block * kLanes;
      counter_block(first + uint64_t(start), x0, x1, key);
      fill(start, std::min(kLanes, n - start), x0, x1);
    }
  });
}

// out[i] = (1 + a z1) (1 + b z2) for i < n; multiplies into out when `accumulate`.
void noise_factor(uintptr_t out_address, int64_t n, double sigma_a, double sigma_b, uint64_t key, bool accumulate) {
  float* out = reinterpret_cast<float*>(out_address);
  const float a = float(sigma_a), b = float(sigma_b);
  pybind11::gil_scoped_release no_gil;
  for_each_block(n, 0, key, [=](int64_t start, int64_t count, const uint32_t* x0, const uint32_t* x1) {
    alignas(64) float factor[kLanes];
    for (int64_t i = 0; i < kLanes; ++i) {
      // 24-bit uniforms: u1 in (0, 1] (so that its log is finite), u2 in [0, 1).
      // Through int32: AVX2 converts signed integers to float, not unsigned ones.
      const float u1 = float(int32_t(x0[i] >> 8) + 1) * (1.0f / 16777216.0f);
      const float u2 = float(int32_t(x1[i] >> 8)) * (1.0f / 16777216.0f);
      const float radius = sqrtf(-2.0f * logf(u1));
      const float angle = 6.28318530717958648f * u2;
      // sin as a shifted cos: GCC fuses a cosf and a sinf of one angle into a
      // sincosf, which glibc has no vector version of.
      factor[i] = (1.0f + a * radius * cosf(angle)) * (1.0f + b * radius * cosf(angle - 1.57079632679489662f));
    }
    float* target = out + start;
    if (accumulate) {
      for (int64_t i = 0; i < count; ++i) target[i] *= factor[i];
    } else {
      std::copy(factor, factor + count, target);
    }
  });
}

// out[i] = 1 / (1 - p) if u_i >= p else 0, with u_i a 24-bit uniform: the keep mask of a dropout of rate
// 0 <= p < 1, with the law of float32 `uniform_() >= p`. Both words of counter i serve, for numbers 2 i, 2 i + 1.
void keep_mask(uintptr_t out_address, int64_t n, double p, uint64_t key) {
  float* out = reinterpret_cast<float*>(out_address);
  const uint32_t threshold = uint32_t(ceil(p * 16777216.0));  // u >= p  <=>  (word >> 8) >= threshold
  const float scale = float(1.0 / (1.0 - p));
  pybind11::gil_scoped_release no_gil;
  for_each_block((n + 1) / 2, 0, key, [=](int64_t start, int64_t count, const uint32_t* x0, const uint32_t* x1) {
    alignas(64) float mask[2 * kLanes];
    for (int64_t i = 0; i < kLanes; ++i) {
      // A product, not a conditional: GCC does not vectorise the conditional read of `scale`.
      mask[2 * i] = float((x0[i] >> 8) >= threshold) * scale;
      mask[2 * i + 1] = float((x1[i] >> 8) >= threshold) * scale;
    }
    std::copy(mask, mask + std::min(2 * count, n - 2 * start), out + 2 * start);
  });
}

// The raw generator, for the known-answer tests: out[2 i], out[2 i + 1] = the words at counter first + i
// (its low 32 bits are the first word of the counter, its high bits the second).
void threefry_words(uintptr_t out_address, int64_t n, uint64_t first, uint64_t key) {
  uint32_t* out = reinterpret_cast<uint32_t*>(out_address);
  pybind11::gil_scoped_release no_gil;
  for_each_block(n, first, key, [=](int64_t start, int64_t count, const uint32_t* x0, const uint32_t* x1) {
    for (int64_t i = 0; i < count; ++i) {
      out[2 * (start + i)] = x0[i];
      out[2 * (start + i) + 1] = x1[i];
    }
  });
}

// Batch norm of the real and imaginary parts (cemnet.nn.functional's spectral batch norm), whose
// composed PyTorch version costs about thirty operations each way. Each of the `batch` examples
// is `outer * channels * inner` floats in memory; the float at (o, c, i) belongs to channel c and
// to part i % 2 (inner is even: the real/imaginary pairs are innermost). Coefficients and sums
// are indexed k = 2 c + part.

// sums[k] = sum of x, sums[2 C + k] = sum of x * y over the batch and the positions (double).
void channel_sums(uintptr_t x_address, uintptr_t y_address, int64_t batch, int64_t outer, int64_t channels,
                  int64_t inner, uintptr_t sums_address) {
  const float* x = reinterpret_cast<const float*>(x_address);
  const float* y = reinterpret_cast<const float*>(y_address);
  double* sums = reinterpret_cast<double*>(sums_address);
  const int64_t pairs = 2 * channels, example = outer * channels * inner;
  std::vector<double> total(2 * pairs, 0.0);
  std::mutex lock;
  pybind11::gil_scoped_release no_gil;
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> local(2 * pairs, 0.0);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t offset = b * example + (o * channels + c) * inner;
          const float* xs = x + offset;
          const float* ys = y + offset;
          float sx[2] = {0.0f, 0.0f}, sxy[2] = {0.0f, 0.0f};  // one row of one channel: short float sums
          for (int64_t i = 0; i < inner; i += 2) {
            sx[0] += xs[i];
            sx[1] += xs[i + 1];
            sxy[0] += xs[i] * ys[i];
            sxy[1] += xs[i + 1] * ys[i + 1];
          }
          local[2 * c] += sx[0];
          local[2 * c + 1] += sx[1];
          local[pairs + 2 * c] += sxy[0];
          local[pairs + 2 * c + 1] += sxy[1];
        }
      }
    }
    std::lock_guard<std::mutex> guard(lock);
    for (int64_t k = 0; k < 2 * pairs; ++k) total[k] += local[k];
  });
  std::copy(total.begin(), total.end(), sums);
}

// out = a[k] x + b[k] (+ g[k] y where y_address is not 0), with the coefficients a, b, g of
// 2 C floats each, one after the other at coefficients_address. out may be x or y.
void channel_affine(uintptr_t out_address, uintptr_t x_address, uintptr_t y_address, int64_t batch, int64_t outer,
                    int64_t channels, int64_t inner, uintptr_t coefficients_address) {
  float* out = reinterpret_cast<float*>(out_address);
  const float* x = reinterpret_cast<const float*>(x_address);
  const float* y = reinterpret_cast<const float*>(y_address);
  const float* coefficients = reinterpret_cast<const float*>(coefficients_address);
  const int64_t pairs = 2 * channels;
  pybind11::gil_scoped_release no_gil;
  at::parallel_for(0, batch * outer * channels, 16, [=](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {  // row = (b * outer + o) * channels + c
      const int64_t c = row % channels, offset = row * inner;
      const float a[2] = {coefficients[2 * c], coefficients[2 * c + 1]};
      const float shift[2] = {coefficients[pairs + 2 * c], coefficients[pairs + 2 * c + 1]};
      float* target = out + offset;
      const float* xs = x + offset;
      if (y == nullptr) {
        for (int64_t i = 0; i < inner; i += 2) {
          target[i] = a[0] * xs[i] + shift[0];
          target[i + 1] = a[1] * xs[i + 1] + shift[1];
        }
      } else {
        const float g[2] = {coefficients[2 * pairs + 2 * c], coefficients[2 * pairs + 2 * c + 1]};
        const float* ys = y + offset;
        for (int64_t i = 0; i < inner; i += 2) {
          target[i] = a[0] * xs[i] + shift[0] + g[0] * ys[i];
          target[i + 1] = a[1] * xs[i + 1] + shift[1] + g[1] * ys[i + 1];
        }
      }
    }
  });
}

// How many of PyTorch's intra-op threads a parallel_for of this library runs on (1 if it was
// built without the thread pool's OpenMP): for the test that the kernel is not serial.
int64_t parallel_threads() {
  const int64_t tasks = 4 * at::get_num_threads();
  std::vector<int64_t> seen(tasks, -1);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) seen[task] = at::get_thread_num();
  });
  std::sort(seen.begin(), seen.end());
  return std::unique(seen.begin(), seen.end()) - seen.begin();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("noise_factor", &noise_factor, "Fill (or multiply) n float32 numbers with (1 + a z1)(1 + b z2)");
  module.def("keep_mask", &keep_mask, "Fill n float32 numbers with a dropout keep mask of rate p, scaled");
  module.def("channel_sums", &channel_sums, "Per channel and part sums of x and x * y (batch norm statistics)");
  module.def("channel_affine", &channel_affine, "out = a x + b (+ g y) per channel and part");
  module.def("parallel_threads", &parallel_threads, "Threads a parallel_for of this module runs on");
  module.def("threefry_words", &threefry_words, "Threefry-2x32-20 words of counters first..first+n-1 under a key");
}
