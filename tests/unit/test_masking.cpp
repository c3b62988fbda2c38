// Per-sample random streams and the BEiT block-wise masking generator (statistics against the official
// algorithm run in Python; tolerances stated per check).
#include "data_helpers.h"

namespace beitv2 {
namespace {

using namespace beitv2::test;

// ---------------------------------------------------------------------------------------------------------
// Rng
// ---------------------------------------------------------------------------------------------------------

TEST(DataRng, DeterministicPerSampleStreams) {
  auto a = Rng::for_sample(1, 2, 3), b = Rng::for_sample(1, 2, 3);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next(), b.next());
  // Any of seed, epoch, index or stream changes the sequence.
  const uint64_t ref = Rng::for_sample(1, 2, 3).next();
  EXPECT_NE(Rng::for_sample(0, 2, 3).next(), ref);
  EXPECT_NE(Rng::for_sample(1, 1, 3).next(), ref);
  EXPECT_NE(Rng::for_sample(1, 2, 4).next(), ref);
  EXPECT_NE(Rng::for_sample(1, 2, 3, RngStream::kMask).next(), ref);
  Rng r(7);
  int64_t lo = 10, hi = 0;
  double umin = 1, umax = 0, sum = 0;
  for (int i = 0; i < 20000; ++i) {
    const int64_t v = r.randint(3, 6);  // both ends included (Python randint)
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    const double u = r.uniform();
    umin = std::min(umin, u);
    umax = std::max(umax, u);
    sum += r.normal(9, 0.5);
  }
  EXPECT_EQ(lo, 3);
  EXPECT_EQ(hi, 6);
  EXPECT_GE(umin, 0.0);
  EXPECT_LT(umax, 1.0);
  EXPECT_NEAR(sum / 20000, 9.0, 0.02);  // std of the mean 0.5/sqrt(2e4) = 0.0035: 5.7 sigma
}

TEST(DataRng, PythonRoundingHalvesToEven) {
  EXPECT_EQ(py_round(2.5), 2);
  EXPECT_EQ(py_round(3.5), 4);
  EXPECT_EQ(py_round(-2.5), -2);
  EXPECT_EQ(py_round(2.4999), 2);
  EXPECT_EQ(py_round(2.5001), 3);
  EXPECT_EQ(py_round(0.5), 0);
}

// ---------------------------------------------------------------------------------------------------------
// Block-wise masking (docs/reference.md §3.4)
// ---------------------------------------------------------------------------------------------------------

TEST(DataMasking, ExactlyTheRequestedCountForAnyGrid) {
  struct Case {
    int64_t h, w, num, min_patches;
  };
  for (const Case& c : std::vector<Case>{{14, 14, 75, 16}, {14, 14, 118, 16}, {7, 7, 10, 4}, {6, 9, 20, 4},
                                         {14, 14, 0, 16}, {14, 14, 196, 16}, {1, 1, 1, 1}, {3, 20, 30, 16}}) {
    MaskingOptions o;
    o.height = c.h;
    o.width = c.w;
    o.num_masking_patches = c.num;
    o.min_num_patches = c.min_patches;
    MaskingGenerator gen(o);
    for (int64_t i = 0; i < 300; ++i) {
      auto rng = Rng::for_sample(0, 0, i, RngStream::kMask);
      const auto m = gen(rng);
      ASSERT_EQ(m.sizes(), torch::IntArrayRef({c.h * c.w}));
      ASSERT_EQ(m.scalar_type(), torch::kBool);
      ASSERT_EQ(m.sum().item<int64_t>(), c.num) << o.to_string();
    }
  }
  MaskingOptions bad;
  bad.num_masking_patches = 197;
  EXPECT_THROW(MaskingGenerator{bad}, ConfigError);
  bad = {};
  bad.min_aspect = 0;
  EXPECT_THROW(MaskingGenerator{bad}, ConfigError);
}

TEST(DataMasking, StatisticsMatchTheOfficialAlgorithm) {
  // 10,000 masks from tests/reference/masking_ref.py (the official generator in plain Python) and from ours,
  // for the BEiT v2 setting (14x14, 75 masked, blocks >= 16) and a small non-square one.
  struct Case {
    int64_t h, w, num, min_patches;
  };
  test::TempDir tmp("masking");
  for (const Case& c : std::vector<Case>{{14, 14, 75, 16}, {6, 9, 20, 4}}) {
    const int draws = 10000;
    const auto ref = run_reference(
        "masking_ref.py",
        c10::str("--height ", c.h, " --width ", c.w, " --num ", c.num, " --min-patches ", c.min_patches,
                 " --draws ", draws, " --seed 1"),
        tmp.path() / "mask.json");
    ASSERT_FALSE(ref.is_null());
    ASSERT_EQ(ref["exact"].get<int>(), draws);

    MaskingOptions o;
    o.height = c.h;
    o.width = c.w;
    o.num_masking_patches = c.num;
    o.min_num_patches = c.min_patches;
    MaskingGenerator gen(o);
    const int64_t n = c.h * c.w;
    std::vector<int64_t> counts(n, 0);
    std::vector<double> blocks, by_blocks;
    for (int i = 0; i < draws; ++i) {
      auto rng = Rng::for_sample(123, 0, i, RngStream::kMask);
      MaskingStats st;
      const auto m = gen.generate(rng, &st);
      ASSERT_EQ(std::accumulate(m.begin(), m.end(), int64_t{0}), c.num);
      for (int64_t k = 0; k < n; ++k) counts[k] += m[k];
      blocks.push_back(static_cast<double>(st.blocks));
      by_blocks.push_back(static_cast<double>(st.masked_by_blocks));
    }
    // Per-position masking frequency: each side estimates p_k from 10k draws; the difference has
    // std sqrt(2 p (1 - p) / 10000) <= 0.0071. 5 sigma per position keeps the family-wise false-alarm rate
    // near 1e-4 over <= 196 positions, and the sum of squared z-scores is held to its chi-square mean
    // (about n) plus 6 standard deviations (sqrt(2n)).
    const auto ref_counts = ref["position_counts"].get<std::vector<int64_t>>();
    ASSERT_EQ(static_cast<int64_t>(ref_counts.size()), n);
    double chi2 = 0, max_z = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double p1 = static_cast<double>(counts[k]) / draws, p2 = static_cast<double>(ref_counts[k]) / draws;
      const double p = (p1 + p2) / 2;
      const double sd = std::sqrt(std::max(2 * p * (1 - p) / draws, 1e-12));
      const double z = (p1 - p2) / sd;
      chi2 += z * z;
      max_z = std::max(max_z, std::fabs(z));
    }
    EXPECT_LT(max_z, 5.0) << o.to_string();
    EXPECT_LT(chi2, n + 6 * std::sqrt(2.0 * n)) << o.to_string();
    // Rectangles per mask and cells masked before the final adjustment: same distributions (KS, alpha 1e-3).
    const auto ref_blocks = ref["blocks"].get<std::vector<double>>();
    const auto ref_by_blocks = ref["masked_by_blocks"].get<std::vector<double>>();
    EXPECT_LT(ks_statistic(blocks, ref_blocks), ks_critical(draws, draws)) << "blocks per mask, " << o.to_string();
    EXPECT_LT(ks_statistic(by_blocks, ref_by_blocks), ks_critical(draws, draws))
        << "cells masked by blocks, " << o.to_string();
    const double mean_blocks = std::accumulate(blocks.begin(), blocks.end(), 0.0) / draws;
    const double ref_mean_blocks = std::accumulate(ref_blocks.begin(), ref_blocks.end(), 0.0) / draws;
    EXPECT_NEAR(mean_blocks, ref_mean_blocks, 0.05)
        << "(block counts have std ~1: the means' difference has std 0.014)";
  }
}

}  // namespace
}  // namespace beitv2
