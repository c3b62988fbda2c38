#pragma once
// Deterministic random numbers for the data pipeline.
//
// Every random decision about a sample (crop box, flip, colour jitter, RandAugment, mask, erasing) comes from an
// Rng derived from (seed, epoch, sample index, stream), never from a shared generator, so a batch is the same
// whatever the number of loader threads, the order they run in, or the number of ranks.
//
// The generator is xoshiro256** seeded through SplitMix64; the distributions are written here (not <random>'s,
// whose algorithms differ between standard libraries), so a seed gives the same numbers on every platform.
// The helpers mirror Python's `random` where the reference algorithms use it (uniform, randint, gauss).

#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

namespace beitv2::data {

/// Independent random sequences of one sample.
enum class RngStream : uint64_t {
  kTransform = 0,   ///< crop, flip, colour jitter, RandAugment
  kMask = 1,        ///< block-wise masking
  kErasing = 2,     ///< random erasing (applied to the normalised batch)
};

/// A small, fast, seedable generator with Python-like helpers.
///
/// Example:
///   auto rng = Rng::for_sample(/*seed=*/0, /*epoch=*/3, /*index=*/1234);
///   double s = rng.uniform(0.08, 1.0);
///   bool flip = rng.bernoulli(0.5);
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : s_) s = splitmix64(x);
  }

  /// The generator of one sample's stream: a hash of (seed, epoch, index, stream).
  static Rng for_sample(uint64_t seed, int64_t epoch, int64_t index, RngStream stream = RngStream::kTransform) {
    uint64_t h = splitmix_mix(seed ^ 0x9e3779b97f4a7c15ull);
    h = splitmix_mix(h ^ static_cast<uint64_t>(epoch));
    h = splitmix_mix(h ^ static_cast<uint64_t>(index));
    h = splitmix_mix(h ^ static_cast<uint64_t>(stream));
    return Rng(h);
  }

  /// 64 random bits (xoshiro256**).
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, 1) with 53 random bits (Python's random.random()).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// a + (b - a) * U[0, 1) (Python's random.uniform; a > b is allowed and samples (b, a]).
  double uniform(double a, double b) { return a + (b - a) * uniform(); }

  /// Uniform integer in [0, n), unbiased (Lemire's method); n > 0.
  uint64_t below(uint64_t n) {
    __uint128_t m = static_cast<__uint128_t>(next()) * n;
    auto low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<__uint128_t>(next()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  /// Uniform integer in [a, b], both ends included (Python's random.randint); requires a <= b.
  int64_t randint(int64_t a, int64_t b) { return a + static_cast<int64_t>(below(static_cast<uint64_t>(b - a) + 1)); }

  /// Normal(mean, std) (Box–Muller; Python's random.gauss has the same distribution).
  double normal(double mean, double std) {
    if (has_spare_) {
      has_spare_ = false;
      return mean + std * spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * std::numbers::pi * u2);
    has_spare_ = true;
    return mean + std * r * std::cos(2.0 * std::numbers::pi * u2);
  }

  /// An independent generator seeded from this one (e.g. the mask's stream inside a sample function).
  Rng split() { return Rng(next()); }

  /// True with probability p (U[0,1) < p).
  bool bernoulli(double p) { return uniform() < p; }

  /// Fisher–Yates shuffle of the first `k` slots of `v` (a uniform k-subset in random order; k = size: all).
  template <class T>
  void partial_shuffle(std::vector<T>& v, size_t k) {
    for (size_t i = 0; i < k && i + 1 < v.size(); ++i) {
      const size_t j = i + static_cast<size_t>(below(v.size() - i));
      std::swap(v[i], v[j]);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  static uint64_t splitmix64(uint64_t& x) { return splitmix_mix(x += 0x9e3779b97f4a7c15ull); }

  uint64_t s_[4];
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// Python's round() (halves to even) as an int: the reference algorithms use int(round(x)), and round(2.5) is 2.
inline int py_round(double x) {
  double r = std::round(x);  // halves away from zero
  if (std::fabs(x - std::trunc(x)) == 0.5) r = 2.0 * std::round(x / 2.0);
  return static_cast<int>(r);
}

}  // namespace beitv2::data
