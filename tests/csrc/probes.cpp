// Test probes of the native kernels' building blocks, built by tests/test_native.py only (never shipped):
// the raw Threefry words, for the known-answer tests, and the threads a parallel_for of a library built
// with cemnet's flags runs on, for the test that the kernels are not serial.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <vector>

#include "threefry.h"

namespace py = pybind11;

// out[2 i], out[2 i + 1] = the words at counter first + i (its low 32 bits are the counter's first word).
void threefry_words(py::array_t<uint32_t, py::array::c_style> out_array, uint64_t first, uint64_t key) {
  if (out_array.size() % 2) throw std::invalid_argument("expected an even number of words");
  uint32_t* out = out_array.mutable_data();
  cemnet::for_each_block(out_array.size() / 2, first, key,
                         [=](int64_t start, int64_t count, const uint32_t* x0, const uint32_t* x1) {
                           for (int64_t i = 0; i < count; ++i) {
                             out[2 * (start + i)] = x0[i];
                             out[2 * (start + i) + 1] = x1[i];
                           }
                         });
}

int64_t parallel_threads() {
  const int64_t tasks = 4 * at::get_num_threads();
  std::vector<int64_t> seen(tasks, -1);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) seen[task] = at::get_thread_num();
  });
  std::sort(seen.begin(), seen.end());
  return std::unique(seen.begin(), seen.end()) - seen.begin();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("threefry_words", &threefry_words, py::arg("out").noconvert(), py::arg("first"), py::arg("key"));
  module.def("parallel_threads", &parallel_threads);
}
