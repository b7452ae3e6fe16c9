// CPU kernels for two of CEMNet's layers, built and loaded by cemnet/_native/__init__.py:
// the noise factors of the approximated Leaky ReLU and dropout (noise_factor; and the keep
// masks of a uniform-threshold dropout, keep_mask), and the batch norm of the real and
// imaginary parts (channel_sums, channel_affine).
//
// Every function takes NumPy views of CPU tensors (pybind11 arrays of float32, C-contiguous,
// never converted: anything else is refused with a TypeError) and checks their sizes against
// each other before it touches memory, so no caller can make it read or write out of bounds.
//
// out[i] = (1 + a z1[i]) (1 + b z2[i]), with z1[i], z2[i] independent N(0, 1): the Box-Muller
// pair (the transform PyTorch's CPU normal_ uses, on 24-bit uniforms) of the two 32-bit words
// of Threefry-2x32-20 (threefry.h) at counter i and a 64-bit key. A counter-based generator
// needs no state, so every number is computed independently, in vectorised blocks, on all of
// PyTorch's intra-op threads; the result depends on the key and the index only, not on the
// thread count. PyTorch's own CPU generator draws serially from one Mersenne Twister.

#include <math.h>

#include <cmath>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "threefry.h"

namespace py = pybind11;

namespace {

using cemnet::for_each_block;
using cemnet::kLanes;

using Floats = py::array_t<float, py::array::c_style>;

void check(bool condition, const std::string& message) {
  if (!condition) throw std::invalid_argument(message);
}

// A batch of `batch` examples, each `outer * channels * inner` floats, `inner` even (real/imaginary pairs).
struct Blocks {
  int64_t batch, outer, channels, inner;

  Blocks(const Floats& x, int64_t outer_, int64_t channels_, int64_t inner_)
      : batch(x.ndim() == 2 ? x.shape(0) : 0), outer(outer_), channels(channels_), inner(inner_) {
    check(x.ndim() == 2, "expected (batch, numbers) rows");
    check(outer > 0 && channels > 0 && inner > 0 && inner % 2 == 0, "blocks must be positive, inner even");
    check(x.shape(1) == outer * channels * inner, "rows do not hold outer * channels * inner numbers");
  }

  void check_same(const Floats& other, const char* name) const {
    check(other.ndim() == 2 && other.shape(0) == batch && other.shape(1) == outer * channels * inner,
          std::string(name) + " must have the shape of x");
  }
};

// out[i] = (1 + a z1) (1 + b z2) for every number of out; multiplies into out when `accumulate`.
void noise_factor(Floats out_array, double sigma_a, double sigma_b, uint64_t key, bool accumulate) {
  check(std::isfinite(sigma_a) && std::isfinite(sigma_b), "sigmas must be finite");
  float* out = out_array.mutable_data();
  const int64_t n = out_array.size();
  const float a = float(sigma_a), b = float(sigma_b);
  py::gil_scoped_release no_gil;
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
void keep_mask(Floats out_array, double p, uint64_t key) {
  check(p >= 0.0 && p < 1.0, "the dropout rate must be in [0, 1)");
  float* out = out_array.mutable_data();
  const int64_t n = out_array.size();
  const uint32_t threshold = uint32_t(ceil(p * 16777216.0));  // u >= p  <=>  (word >> 8) >= threshold
  const float scale = float(1.0 / (1.0 - p));
  py::gil_scoped_release no_gil;
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

// Batch norm of the real and imaginary parts, whose composed PyTorch version costs about thirty
// operations each way. Each row of x is one example, `outer * channels * inner` floats in memory;
// the float at (o, c, i) belongs to channel c and to part i % 2. Sums and coefficients are indexed
// k = 2 c + part.

// (2, C, 2) doubles: the sums of x, then of x * y, over the batch and the positions.
py::array_t<double> channel_sums(Floats x_array, Floats y_array, int64_t outer, int64_t channels, int64_t inner) {
  const Blocks blocks(x_array, outer, channels, inner);
  blocks.check_same(y_array, "y");
  const float* x = x_array.data();
  const float* y = y_array.data();
  const int64_t pairs = 2 * channels, example = outer * channels * inner;
  std::vector<double> total(2 * pairs, 0.0);
  {
    std::mutex lock;
    py::gil_scoped_release no_gil;
    at::parallel_for(0, blocks.batch, 1, [&](int64_t begin, int64_t end) {
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
  }
  py::array_t<double> sums({int64_t(2), channels, int64_t(2)});
  std::copy(total.begin(), total.end(), sums.mutable_data());
  return sums;
}

// out = a[k] x + b[k] (+ g[k] y when y is given), the coefficients a, b (, g) stacked as (2 or 3, C, 2).
void channel_affine(Floats out_array, Floats x_array, py::object y_object, Floats coefficients_array,
                    int64_t outer, int64_t channels, int64_t inner) {
  const Blocks blocks(x_array, outer, channels, inner);
  blocks.check_same(out_array, "out");
  const bool with_y = !y_object.is_none();
  check(!with_y || py::isinstance<Floats>(y_object), "y must be a C-contiguous float32 array");
  Floats y_array = with_y ? y_object.cast<Floats>() : Floats();
  if (with_y) blocks.check_same(y_array, "y");
  check(coefficients_array.ndim() == 3 && coefficients_array.shape(0) == (with_y ? 3 : 2) &&
            coefficients_array.shape(1) == channels && coefficients_array.shape(2) == 2,
        with_y ? "expected (3, C, 2) coefficients" : "expected (2, C, 2) coefficients");
  float* out = out_array.mutable_data();
  const float* x = x_array.data();
  const float* y = with_y ? y_array.data() : nullptr;
  const float* coefficients = coefficients_array.data();
  const int64_t pairs = 2 * channels;
  py::gil_scoped_release no_gil;
  at::parallel_for(0, blocks.batch * outer * channels, 16, [=](int64_t begin, int64_t end) {
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("noise_factor", &noise_factor, "Fill (or multiply) float32 numbers with (1 + a z1)(1 + b z2)",
             py::arg("out").noconvert(), py::arg("sigma_a"), py::arg("sigma_b"), py::arg("key"),
             py::arg("accumulate"));
  module.def("keep_mask", &keep_mask, "Fill float32 numbers with a dropout keep mask of rate p, scaled",
             py::arg("out").noconvert(), py::arg("p"), py::arg("key"));
  module.def("channel_sums", &channel_sums, "Per channel and part sums of x and x * y (batch norm statistics)",
             py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("outer"), py::arg("channels"),
             py::arg("inner"));
  module.def("channel_affine", &channel_affine, "out = a x + b (+ g y) per channel and part",
             py::arg("out").noconvert(), py::arg("x").noconvert(), py::arg("y"), py::arg("coefficients").noconvert(),
             py::arg("outer"), py::arg("channels"), py::arg("inner"));
}
