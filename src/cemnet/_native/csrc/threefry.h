// Threefry-2x32-20 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; JAX's
// default generator) on eight counters at a time, and a loop that hands every block of 64 counters'
// words to a fill function on PyTorch's intra-op threads (at::parallel_for). Shared by the shipped
// kernels (kernels.cpp) and the test probes (tests/csrc/probes.cpp).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace cemnet {

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

}  // namespace cemnet
