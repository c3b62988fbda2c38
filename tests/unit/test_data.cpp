// The data pipeline: masking and crop statistics against the Python reference algorithms, datasets, strict
// decoding with the skip/fail policy, transforms, the loader's determinism, sharding and error handling.
//
// Statistical comparisons use independent random streams on the two sides (our Rng vs Python's `random`), so
// they compare distributions, with tolerances stated next to each check. Every bound is set so that a correct
// implementation fails with probability < ~1e-3 per check, while the mistakes they guard against (Python
// rounding vs std::lround, uniform vs log-uniform aspect, min block 4 vs 16, no final adjustment, ...) move the
// statistic well past it.
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>
#include <thread>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data.h"
#include "common.h"

namespace beitv2 {
namespace {

namespace fs = std::filesystem;
using namespace beitv2::data;

/// Any python3 runs the reference algorithms (standard library only); the build env's is preferred.
std::string python() {
  for (const char* var : {"BEITV2_BUILD_PYTHON", "BEITV2_PYTHON"}) {
    const char* p = std::getenv(var);
    if (p && fs::exists(p)) return p;
  }
  return "python3";
}

nlohmann::json run_reference(const std::string& script, const std::string& args, const fs::path& out) {
  const std::string cmd = python() + " " + (test::source_dir() / "tests" / "reference" / script).string() + " " +
                          args + " --out " + out.string();
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    ADD_FAILURE() << "reference failed (" << rc << "): " << cmd;
    return {};
  }
  std::ifstream f(out);
  return nlohmann::json::parse(f);
}

/// Two-sample Kolmogorov–Smirnov statistic sup |F_a - F_b| (ties handled: both CDFs step at each value).
double ks_statistic(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  size_t i = 0, j = 0;
  double d = 0;
  while (i < a.size() && j < b.size()) {
    const double v = std::min(a[i], b[j]);
    while (i < a.size() && a[i] == v) ++i;
    while (j < b.size() && b[j] == v) ++j;
    d = std::max(d, std::fabs(static_cast<double>(i) / a.size() - static_cast<double>(j) / b.size()));
  }
  return d;
}

/// The KS critical value at alpha = 0.001 (c = 1.95); conservative for discrete data.
double ks_critical(size_t n, size_t m) { return 1.95 * std::sqrt(static_cast<double>(n + m) / (n * m)); }

cv::Mat random_rgb(int h, int w, uint64_t seed) {
  cv::Mat m(h, w, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(m, cv::RNG::UNIFORM, 0, 256);
  cv::GaussianBlur(m, m, cv::Size(3, 3), 0);  // some structure, so colour ops and resizes have work to do
  return m;
}

void write_rgb(const fs::path& p, const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imwrite(p.string(), bgr)) << p;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string encode(const cv::Mat& rgb, const std::string& ext) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf));
  return std::string(buf.begin(), buf.end());
}

/// An image_folder of `per_class` random PNGs per class (sizes vary), classes "b_cat", "a_dog", "c_eel".
fs::path make_image_folder(const fs::path& root, int per_class) {
  const std::vector<std::string> classes{"b_cat", "a_dog", "c_eel"};
  int k = 0;
  for (const auto& c : classes) {
    fs::create_directories(root / c);
    for (int i = 0; i < per_class; ++i, ++k) {
      write_rgb(root / c / ("img" + std::to_string(i) + ".png"), random_rgb(20 + (k * 7) % 23, 18 + (k * 5) % 29, k));
    }
  }
  return root;
}

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

// ---------------------------------------------------------------------------------------------------------
// RandomResizedCrop boxes
// ---------------------------------------------------------------------------------------------------------

TEST(DataCrop, BoxStatisticsMatchTorchvision) {
  // 20,000 boxes from tests/reference/crop_ref.py (torchvision's get_params in plain Python) and from ours;
  // marginals of top, left, height, width and aspect compared with the two-sample KS test at alpha = 1e-3
  // (critical value 0.0195), and the centre-crop fallback rate within 5 binomial standard deviations.
  // (Sampling the aspect uniformly instead of log-uniformly gives KS 0.024-0.038 on these marginals.)
  struct Case {
    int h, w;
    double s0, s1;
  };
  test::TempDir tmp("crop");
  const int draws = 20000;
  for (const Case& c : std::vector<Case>{{375, 500, 0.08, 1.0}, {224, 224, 0.2, 1.0}, {28, 28, 0.08, 1.0},
                                         {100, 1000, 0.08, 1.0}}) {
    const auto ref = run_reference("crop_ref.py",
                                   c10::str("--height ", c.h, " --width ", c.w, " --scale ", c.s0, " ", c.s1,
                                            " --draws ", draws, " --seed 2"),
                                   tmp.path() / "crop.json");
    ASSERT_FALSE(ref.is_null());
    std::array<std::vector<double>, 5> ours, theirs;  // top, left, height, width, aspect w/h
    int fallbacks = 0;
    for (int i = 0; i < draws; ++i) {
      auto rng = Rng::for_sample(5, 0, i);
      bool fb = false;
      const CropBox b = random_resized_crop_box(c.h, c.w, {c.s0, c.s1}, {3.0 / 4.0, 4.0 / 3.0}, rng, &fb);
      ASSERT_TRUE(b.top >= 0 && b.left >= 0 && b.height > 0 && b.width > 0 && b.top + b.height <= c.h &&
                  b.left + b.width <= c.w);
      fallbacks += fb;
      for (int k = 0; k < 4; ++k) ours[k].push_back(std::array<int, 4>{b.top, b.left, b.height, b.width}[k]);
      ours[4].push_back(static_cast<double>(b.width) / b.height);
    }
    for (const auto& box : ref["boxes"]) {
      for (int k = 0; k < 4; ++k) theirs[k].push_back(box[k].get<double>());
      theirs[4].push_back(box[3].get<double>() / box[2].get<double>());
    }
    const char* names[5] = {"top", "left", "height", "width", "aspect"};
    for (int k = 0; k < 5; ++k) {
      EXPECT_LT(ks_statistic(ours[k], theirs[k]), ks_critical(draws, draws))
          << names[k] << " for " << c.w << "x" << c.h << " scale " << c.s0;
    }
    const double p1 = static_cast<double>(fallbacks) / draws, p2 = ref["fallbacks"].get<double>() / draws;
    const double p = (p1 + p2) / 2;
    EXPECT_LE(std::fabs(p1 - p2), 5 * std::sqrt(2 * p * (1 - p) / draws) + 1e-9)
        << "fallback rate " << p1 << " vs reference " << p2 << " for " << c.w << "x" << c.h;
  }
}

TEST(DataCrop, FallbackIsTheCentreCropWithClampedAspect) {
  // A scale range no box can satisfy forces the fallback: exact torchvision values.
  auto rng = Rng::for_sample(0, 0, 0);
  bool fb = false;
  EXPECT_EQ(random_resized_crop_box(100, 1000, {2, 3}, {0.75, 4.0 / 3}, rng, &fb), (CropBox{0, 433, 100, 133}));
  EXPECT_TRUE(fb);
  EXPECT_EQ(random_resized_crop_box(1000, 100, {2, 3}, {0.75, 4.0 / 3}, rng), (CropBox{433, 0, 133, 100}));
  EXPECT_EQ(random_resized_crop_box(300, 301, {2, 3}, {0.75, 4.0 / 3}, rng), (CropBox{0, 0, 300, 301}));
}

// ---------------------------------------------------------------------------------------------------------
// Transforms
// ---------------------------------------------------------------------------------------------------------

TEST(DataTransforms, GeometryAndRounding) {
  const cv::Mat img = random_rgb(37, 50, 1);
  // torchvision CenterCrop rounds (H - h) / 2 = 6.5 to 6 (Python rounding), (W - w) / 2 = 12.5 to 12.
  const cv::Mat cc = center_crop(img, 24, 25);
  EXPECT_EQ(cv::norm(cc, img(cv::Rect(12, 6, 25, 24)), cv::NORM_INF), 0.0);
  EXPECT_THROW(center_crop(img, 40, 10), c10::Error);
  // Resize(256) keeps the aspect with the long side truncated.
  EXPECT_EQ(resize_shorter(img, 64, cv::INTER_CUBIC).size(), cv::Size(86, 64));
  EXPECT_EQ(EvalTransform{}.resize_size(), 256);
  EXPECT_EQ(EvalTransform{}(random_rgb(300, 400, 2)).size(), cv::Size(224, 224));
  EvalTransform explicit_resize;  // an explicit shorter side overrides crop_pct
  explicit_resize.crop = 32;
  explicit_resize.resize = 40;
  EXPECT_EQ(explicit_resize.resize_size(), 40);
  EXPECT_EQ(explicit_resize(img).size(), cv::Size(32, 32));
  explicit_resize.resize = 20;
  EXPECT_THROW(explicit_resize.validate(), ConfigError);
  cv::Mat f = img.clone();
  hflip_(f);
  EXPECT_EQ(f.at<cv::Vec3b>(3, 0), img.at<cv::Vec3b>(3, 49));
  // resized_crop = resample of the box.
  const CropBox box{5, 7, 20, 30};
  const cv::Mat rc = resized_crop(img, box, 16, 16, cv::INTER_CUBIC);
  EXPECT_EQ(cv::norm(rc, pil::resample(img(cv::Rect(7, 5, 30, 20)).clone(), 16, 16, cv::INTER_CUBIC), cv::NORM_INF), 0);
  EXPECT_THROW(resized_crop(img, CropBox{30, 0, 10, 10}, 8, 8, cv::INTER_CUBIC), c10::Error);
  // The same size is a copy; a constant image stays constant through every filter.
  EXPECT_EQ(cv::norm(pil::resample(img, 37, 50, cv::INTER_CUBIC), img, cv::NORM_INF), 0);
  const cv::Mat flat(13, 17, CV_8UC3, cv::Scalar(10, 200, 77));
  for (int interp : {cv::INTER_CUBIC, cv::INTER_LINEAR, cv::INTER_LANCZOS4, cv::INTER_NEAREST}) {
    EXPECT_EQ(cv::norm(pil::resample(flat, 40, 5, interp), cv::Mat(40, 5, CV_8UC3, cv::Scalar(10, 200, 77)),
                       cv::NORM_INF), 0) << interp;
  }
}

TEST(DataTransforms, TwoViewsShareOneBoxAndOneFlip) {
  TwoViewTransform t;
  t.size = 24;
  t.second_size = 24;  // same size and interpolation: the two views must be identical
  const cv::Mat img = random_rgb(60, 80, 3);
  for (int i = 0; i < 20; ++i) {
    auto rng = Rng::for_sample(0, 0, i);
    auto [a, b] = t(img, rng);
    ASSERT_EQ(a.size(), cv::Size(24, 24));
    EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0);
  }
  t.second_size = 12;
  t.second_interpolation = cv::INTER_LANCZOS4;
  auto rng = Rng::for_sample(0, 0, 0);
  auto [a, b] = t(img, rng);
  EXPECT_EQ(a.size(), cv::Size(24, 24));
  EXPECT_EQ(b.size(), cv::Size(12, 12));
  // Deterministic for a given Rng state.
  auto r1 = Rng::for_sample(9, 1, 2), r2 = Rng::for_sample(9, 1, 2);
  EXPECT_EQ(cv::norm(t(img, r1).first, t(img, r2).first, cv::NORM_INF), 0);
}

TEST(DataTransforms, ColorJitterFollowsTorchvisionRanges) {
  const cv::Mat img = random_rgb(16, 16, 4);
  cv::Mat same = img.clone();
  auto rng = Rng(1);
  ColorJitter{}.apply_(same, rng);  // all strengths 0: no change
  EXPECT_EQ(cv::norm(same, img, cv::NORM_INF), 0);
  // Brightness alone with strength 0.4: the factor is in [0.6, 1.4], so every pixel scales within those bounds.
  const cv::Mat flat(4, 4, CV_8UC3, cv::Scalar(100, 100, 100));
  double lo = 255, hi = 0;
  for (int i = 0; i < 400; ++i) {
    cv::Mat m = flat.clone();
    auto r = Rng::for_sample(0, 0, i);
    ColorJitter{0.4, 0, 0}.apply_(m, r);
    lo = std::min(lo, static_cast<double>(m.at<cv::Vec3b>(0, 0)[0]));
    hi = std::max(hi, static_cast<double>(m.at<cv::Vec3b>(0, 0)[0]));
  }
  EXPECT_GE(lo, 60);
  EXPECT_LE(lo, 62);  // 400 draws reach within 1% of the range ends
  EXPECT_LE(hi, 140);
  EXPECT_GE(hi, 138);
  EXPECT_THROW((ColorJitter{-0.1, 0, 0}.validate()), ConfigError);
}

TEST(DataTransforms, RandAugmentConfigStrings) {
  const auto o = RandAugmentOptions::parse("rand-m9-mstd0.5-inc1");
  EXPECT_EQ(o.magnitude, 9);
  EXPECT_EQ(o.magnitude_std, 0.5);
  EXPECT_TRUE(o.increasing);
  EXPECT_EQ(o.num_ops, 2);
  EXPECT_EQ(o.prob, 0.5);
  EXPECT_TRUE(std::isinf(RandAugmentOptions::parse("rand-m9-mstd101").magnitude_std));
  EXPECT_EQ(RandAugmentOptions::parse("rand-n3-p0.7").num_ops, 3);
  EXPECT_THROW(RandAugmentOptions::parse("augmix-m9"), ConfigError);
  EXPECT_THROW(RandAugmentOptions::parse("rand-m9-x3"), ConfigError);
  EXPECT_THROW(RandAugmentOptions::parse("rand-mfoo"), ConfigError);
  const auto& inc = rand_augment_ops(true);
  ASSERT_EQ(inc.size(), 15u);
  EXPECT_STREQ(augment_op_name(inc[4]), "PosterizeIncreasing");
  EXPECT_STREQ(augment_op_name(inc[9]), "BrightnessIncreasing");
  // Applying it keeps size and type, and is a function of the Rng state.
  FinetuneTransform ft;
  ft.crop.size = 32;
  const cv::Mat img = random_rgb(50, 40, 5);
  int changed = 0;
  for (int i = 0; i < 30; ++i) {
    auto r1 = Rng::for_sample(0, 0, i), r2 = Rng::for_sample(0, 0, i);
    const cv::Mat a = ft(img, r1), b = ft(img, r2);
    ASSERT_EQ(a.size(), cv::Size(32, 32));
    ASSERT_EQ(a.type(), CV_8UC3);
    EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0);
    // Without RandAugment the same Rng gives the plain crop; count how often RandAugment changed it.
    FinetuneTransform plain = ft;
    plain.rand_augment = RandAugment(RandAugmentOptions::parse("rand-n0"));
    auto r3 = Rng::for_sample(0, 0, i);
    changed += cv::norm(plain(img, r3), a, cv::NORM_INF) > 0;
  }
  // Two ops at p 0.5: an image escapes both with probability 1/4 (plus rare no-op draws); 30 images.
  EXPECT_GE(changed, 12);
}

TEST(DataTransforms, RandomErasingIsPerImageAndDeterministic) {
  RandomErasingOptions o;
  o.probability = 1.0;
  RandomErasing re(o);
  auto x = torch::zeros({6, 3, 32, 32});
  re.apply_(x, 7, 0, torch::arange(10, 16));
  for (int64_t b = 0; b < 6; ++b) {
    const auto nz = x[b].abs().sum(0) > 0;  // erased pixels (N(0,1) noise is never exactly 0)
    const int64_t area = nz.sum().item<int64_t>();
    // One box of area in [0.02, 1/3] * 1024 before rounding h and w (a box of h x w with rounding: allow 15%).
    EXPECT_GE(area, static_cast<int64_t>(0.02 * 1024 * 0.85)) << b;
    EXPECT_LE(area, static_cast<int64_t>(1024 / 3.0 * 1.15)) << b;
    const auto rows = nz.any(1).nonzero(), cols = nz.any(0).nonzero();
    const int64_t h = rows.max().item<int64_t>() - rows.min().item<int64_t>() + 1;
    const int64_t w = cols.max().item<int64_t>() - cols.min().item<int64_t>() + 1;
    EXPECT_EQ(h * w, area) << "the erased region is one filled rectangle";
    EXPECT_EQ(x[b].select(0, 0).ne(0).sum().item<int64_t>(), area) << "all channels erased";
  }
  // Image with index 12 alone gives the same result as inside the batch.
  auto y = torch::zeros({1, 3, 32, 32});
  re.apply_(y, 7, 0, torch::tensor({12}, torch::kLong));
  EXPECT_TRUE(torch::equal(y[0], x[2]));
  // p = 0.25: about a quarter of images erased.
  RandomErasing quarter;
  auto z = torch::zeros({400, 3, 8, 8});
  quarter.apply_(z, 1, 0, torch::arange(400));
  const int64_t erased = z.flatten(1).ne(0).any(1).sum().item<int64_t>();
  EXPECT_NEAR(erased, 100, 5 * std::sqrt(400 * 0.25 * 0.75));  // binomial, 5 sigma
  o.mode = "bogus";
  EXPECT_THROW(RandomErasing{o}, ConfigError);
}

// ---------------------------------------------------------------------------------------------------------
// Datasets and decoding
// ---------------------------------------------------------------------------------------------------------

TEST(DataDataset, ImageFolderFolderAndListFile) {
  test::TempDir tmp("datasets");
  const auto root = make_image_folder(tmp.path() / "train", 2);
  write_bytes(tmp.path() / "train" / "README.txt", "not an image, not in a class folder");
  const auto ds = ImageDataset::image_folder(root);
  EXPECT_EQ(ds.size(), 6);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"a_dog", "b_cat", "c_eel"}));  // sorted folder names
  EXPECT_EQ(ds.label(0), 0);
  EXPECT_EQ(ds.path(0).parent_path().filename(), "a_dog");
  EXPECT_EQ(ds.label(5), 2);
  EXPECT_NE(ds.summary().find("6 images, 3 classes"), std::string::npos) << ds.summary();

  const auto flat = ImageDataset::folder(tmp.path());
  EXPECT_EQ(flat.size(), 6);
  EXPECT_FALSE(flat.labelled());
  EXPECT_EQ(flat.label(3), -1);

  // List file: relative paths resolve against the list's folder; labels on all lines.
  fs::create_directories(tmp.path() / "lists");
  write_bytes(tmp.path() / "lists" / "l.txt", "# comment\n../train/a_dog/img0.png 4\n\n  ../train/b_cat/img1.png\t1 \n");
  const auto lst = ImageDataset::list_file(tmp.path() / "lists" / "l.txt");
  EXPECT_EQ(lst.size(), 2);
  EXPECT_EQ(lst.label(0), 4);
  EXPECT_EQ(lst.label(1), 1);
  EXPECT_EQ(lst.num_classes(), 5);
  EXPECT_EQ(lst.load(1).size(), cv::imread(lst.path(1).string()).size());
  write_bytes(tmp.path() / "lists" / "u.txt", (root / "c_eel" / "img0.png").string() + "\n");
  EXPECT_FALSE(ImageDataset::list_file(tmp.path() / "lists" / "u.txt").labelled());

  auto error_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "no error";
  };
  // Clear errors, before training: missing root, empty dataset, empty class, missing listed files, mixed labels.
  EXPECT_NE(error_of([&] { ImageDataset::image_folder(tmp.path() / "nope"); }).find("nope: no such directory"),
            std::string::npos);
  fs::create_directories(tmp.path() / "empty");
  EXPECT_NE(error_of([&] { ImageDataset::folder(tmp.path() / "empty"); }).find("no image files"), std::string::npos);
  EXPECT_NE(error_of([&] { ImageDataset::image_folder(tmp.path() / "empty"); }).find("no class folders"),
            std::string::npos);
  fs::create_directories(root / "d_void");
  EXPECT_NE(error_of([&] { ImageDataset::image_folder(root); }).find("d_void: class folder holds no image"),
            std::string::npos);
  write_bytes(tmp.path() / "lists" / "missing.txt", "../train/a_dog/img0.png 0\ngone.jpg 1\nalso_gone.png 2\n");
  const auto miss = error_of([&] { ImageDataset::list_file(tmp.path() / "lists" / "missing.txt"); });
  EXPECT_NE(miss.find("2 of 3 listed files do not exist"), std::string::npos) << miss;
  EXPECT_NE(miss.find("line 2: "), std::string::npos) << miss;
  EXPECT_NE(miss.find("gone.jpg"), std::string::npos) << miss;
  write_bytes(tmp.path() / "lists" / "mixed.txt", "../train/a_dog/img0.png 0\n../train/a_dog/img1.png\n");
  EXPECT_NE(error_of([&] { ImageDataset::list_file(tmp.path() / "lists" / "mixed.txt"); })
                .find("mixed.txt:2: has no label"),
            std::string::npos);
  write_bytes(tmp.path() / "lists" / "none.txt", "# nothing\n");
  EXPECT_NE(error_of([&] { ImageDataset::list_file(tmp.path() / "lists" / "none.txt"); }).find("names no files"),
            std::string::npos);
  EXPECT_THROW(ImageDataset::open("parquet", root), ConfigError);
  EXPECT_THROW(parse_decode_policy("ignore"), ConfigError);
  EXPECT_EQ(parse_decode_policy("fail"), DecodePolicy::kFail);
}

/// Good and bad files side by side: returns the number of bad ones.
int write_corrupt_set(const fs::path& dir) {
  fs::create_directories(dir);
  const cv::Mat img = random_rgb(40, 48, 11);
  const std::string jpg = encode(img, ".jpg"), png = encode(img, ".png");
  write_bytes(dir / "good.jpg", jpg);
  write_bytes(dir / "good.png", png);
  write_bytes(dir / "good_grey.png", encode(cv::Mat(10, 12, CV_8UC3, cv::Scalar(7, 7, 7)), ".png"));
  {  // valid JPEGs with several scans (progressive) and with restart markers: not mistaken for truncated ones
    cv::Mat bgr;
    cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> buf;
    EXPECT_TRUE(cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
    write_bytes(dir / "good_progressive.jpg", std::string(buf.begin(), buf.end()));
    EXPECT_TRUE(cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_RST_INTERVAL, 2}));
    write_bytes(dir / "good_restart.jpg", std::string(buf.begin(), buf.end()));
  }
  write_bytes(dir / "truncated.jpg", jpg.substr(0, jpg.size() / 2));          // OpenCV alone decodes this
  write_bytes(dir / "truncated_tail.jpg", jpg.substr(0, jpg.size() - 2));     // only the end marker missing
  write_bytes(dir / "truncated.png", png.substr(0, png.size() / 2));
  write_bytes(dir / "header_only.jpg", jpg.substr(0, 100));
  std::string bad_crc = png;
  bad_crc[png.size() / 2] ^= 0x55;                                           // flips bits inside IDAT
  write_bytes(dir / "corrupt_idat.png", bad_crc);
  write_bytes(dir / "garbage.jpg", std::string(500, '\x5a'));
  write_bytes(dir / "empty.png", "");
  write_bytes(dir / "text.png", "this is not a png\n");
  return 8;
}

TEST(DataDecode, CorruptAndTruncatedFilesAreRejectedNamingTheFile) {
  test::TempDir tmp("decode");
  write_corrupt_set(tmp.path());
  EXPECT_EQ(load_rgb(tmp.path() / "good.png").size(), cv::Size(48, 40));
  EXPECT_EQ(load_rgb(tmp.path() / "good.jpg").type(), CV_8UC3);
  EXPECT_EQ(load_rgb(tmp.path() / "good_grey.png").at<cv::Vec3b>(0, 0), cv::Vec3b(7, 7, 7));
  EXPECT_EQ(load_rgb(tmp.path() / "good_progressive.jpg").size(), cv::Size(48, 40));
  EXPECT_EQ(load_rgb(tmp.path() / "good_restart.jpg").size(), cv::Size(48, 40));
  // Every photo of the opencv-doc set decodes (none is mistaken for a truncated file).
  const auto photos = ImageDataset::folder(test::photos_dir());
  for (int64_t i = 0; i < photos.size(); ++i) EXPECT_NO_THROW(photos.load(i)) << photos.path(i);
  for (const char* bad : {"truncated.jpg", "truncated_tail.jpg", "truncated.png", "header_only.jpg",
                          "corrupt_idat.png", "garbage.jpg", "empty.png", "text.png", "missing.png"}) {
    try {
      load_rgb(tmp.path() / bad);
      ADD_FAILURE() << bad << " decoded";
    } catch (const DecodeError& e) {
      EXPECT_NE(std::string(e.what()).find((tmp.path() / bad).string() + ": "), std::string::npos) << e.what();
    }
  }
  // Header sizes without decoding.
  std::ifstream f(tmp.path() / "good.jpg", std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(peek_image_size(bytes).height, 40);
  EXPECT_EQ(peek_image_size(bytes).width, 48);
}

TEST(DataDecode, LoaderSkipsAndCountsBadFilesOrFailsNamingThem) {
  test::TempDir tmp("skip");
  const int bad = write_corrupt_set(tmp.path() / "x");
  auto ds = std::make_shared<const ImageDataset>(ImageDataset::folder(tmp.path()));
  ASSERT_EQ(ds->size(), 13);
  TrainTransform t;
  t.crop.size = 8;
  LoaderOptions o;
  o.batch_size = 4;
  o.drop_last = false;
  o.num_workers = 2;
  {
    Loader loader(ds->size(), train_sample_fn(ds, t), o);
    loader.start_epoch(0);
    int64_t seen = 0;
    while (auto b = loader.next()) {
      seen += b->size();
      for (int64_t i = 0; i < b->size(); ++i) {
        const std::string name = ds->path(b->indices[i].item<int64_t>()).filename().string();
        EXPECT_TRUE(name.rfind("good", 0) == 0) << "a bad file reached a batch: " << name;
      }
    }
    EXPECT_EQ(seen, 13) << "batches keep their size: skipped files are replaced";
    EXPECT_EQ(loader.skipped_count(), bad);
    loader.start_epoch(1);  // a second epoch meets the same files: still counted once each
    while (loader.next()) {
    }
    EXPECT_EQ(loader.skipped_count(), bad);
  }
  o.decode_policy = DecodePolicy::kFail;
  Loader failing(ds->size(), train_sample_fn(ds, t), o);
  failing.start_epoch(0);
  try {
    while (failing.next()) {
    }
    FAIL() << "no error with decode policy fail";
  } catch (const DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find(tmp.path().string() + "/x/"), std::string::npos) << e.what();
  }
}

/// A PNG's bytes with the IHDR width and height replaced (CRC updated): a tiny file that claims a huge image.
std::string png_claiming(const std::string& png, uint32_t width, uint32_t height) {
  std::string out = png;
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
  };
  put32(16, width);
  put32(20, height);
  uint32_t crc = 0xffffffffu;  // CRC-32 of the chunk type and data (bytes 12..28)
  for (size_t i = 12; i < 29; ++i) {
    crc ^= static_cast<uint8_t>(out[i]);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  put32(29, ~crc);
  return out;
}

TEST(DataDecode, HugeImagesAreRefusedFromTheHeaderPerThePolicy) {
  test::TempDir tmp("huge");
  const cv::Mat img = random_rgb(40, 48, 3);
  const std::string png = encode(img, ".png");
  write_bytes(tmp / "good.png", png);
  write_bytes(tmp / "huge.png", png_claiming(png, 20000, 20000));  // 400 megapixels: 1.2 GB decoded
  write_bytes(tmp / "good.jpg", encode(img, ".jpg"));
  write_bytes(tmp / "good.bmp", encode(img, ".bmp"));
  const std::string huge = read_file(tmp / "huge.png");
  ASSERT_EQ(peek_image_size(std::vector<uint8_t>(huge.begin(), huge.end())).width, 20000);
  try {
    load_rgb(tmp / "huge.png");
    FAIL() << "decoded";
  } catch (const DecodeError& e) {
    EXPECT_EQ(std::string(e.what()), (tmp / "huge.png").string() +
                                         ": image too large (20000x20000 pixels, more than the limit of 64000000)");
  }
  // The limit is an option: from the header for PNG and JPEG, after decoding for other formats; 0 disables it.
  DecodeOptions small;
  small.max_pixels = 48 * 40 - 1;
  for (const char* f : {"good.png", "good.jpg", "good.bmp"}) {
    try {
      load_rgb(tmp / f, small);
      ADD_FAILURE() << f << " decoded";
    } catch (const DecodeError& e) {
      EXPECT_NE(std::string(e.what()).find(": image too large (48x40 pixels, more than the limit of 1919)"),
                std::string::npos)
          << e.what();
    }
    small.max_pixels = 48 * 40;
    EXPECT_EQ(load_rgb(tmp / f, small).size(), cv::Size(48, 40)) << f;
    small.max_pixels = 48 * 40 - 1;
  }
  // A dataset's loads follow its options; the loader's decode policy decides: skip counts it, fail names it.
  auto ds = std::make_shared<ImageDataset>(ImageDataset::folder(tmp.path()));
  EXPECT_EQ(ds->decode_options().max_pixels, 64'000'000);
  TrainTransform t;
  t.crop.size = 8;
  LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 1;
  {
    Loader loader(ds->size(), train_sample_fn(ds, t), o);
    loader.start_epoch(0);
    int64_t seen = 0;
    while (auto b = loader.next()) seen += b->size();
    EXPECT_EQ(seen, 4) << "the huge file is replaced by a good one";
    EXPECT_EQ(loader.skipped_files(), std::vector<std::string>{(tmp / "huge.png").string() +
                                      ": image too large (20000x20000 pixels, more than the limit of 64000000)"});
  }
  o.decode_policy = DecodePolicy::kFail;
  ds->set_decode_options(DecodeOptions{3000});
  Loader failing(ds->size(), train_sample_fn(ds, t), o);
  failing.start_epoch(0);
  try {
    while (failing.next()) {
    }
    FAIL() << "no error with decode policy fail";
  } catch (const DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find("huge.png: image too large"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------------------------------

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch, int64_t first_step = 0) {
  std::vector<Batch> out;
  loader.start_epoch(epoch, first_step);
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t s = 0; s < a.size(); ++s) {
    ASSERT_EQ(a[s].images.size(), b[s].images.size()) << what;
    for (size_t v = 0; v < a[s].images.size(); ++v) {
      EXPECT_TRUE(torch::equal(a[s].images[v], b[s].images[v])) << what << " step " << s << " view " << v;
    }
    EXPECT_TRUE(torch::equal(a[s].labels, b[s].labels)) << what << " step " << s;
    EXPECT_TRUE(torch::equal(a[s].indices, b[s].indices)) << what << " step " << s;
    EXPECT_EQ(a[s].masks.defined(), b[s].masks.defined());
    if (a[s].masks.defined()) {
      EXPECT_TRUE(torch::equal(a[s].masks, b[s].masks)) << what << " step " << s;
    }
    EXPECT_EQ(a[s].step, b[s].step);
  }
}

TEST(DataLoader, IdenticalBatchesWhateverTheWorkerCount) {
  test::TempDir tmp("determinism");
  auto ds = std::make_shared<const ImageDataset>(ImageDataset::image_folder(make_image_folder(tmp.path(), 8)));
  TwoViewTransform two;
  two.size = 16;
  two.second_size = 8;
  two.second_interpolation = cv::INTER_LANCZOS4;
  MaskingOptions mo;
  mo.height = mo.width = 4;
  mo.num_masking_patches = 6;
  mo.min_num_patches = 2;
  TrainTransform one;
  one.crop.size = 12;
  one.jitter = {0.4, 0.4, 0.4};
  FinetuneTransform ft;
  ft.crop.size = 12;
  const std::vector<std::pair<std::string, SampleFn>> fns{
      {"pretrain", pretrain_sample_fn(ds, two, MaskingGenerator(mo))},
      {"train", train_sample_fn(ds, one)},
      {"finetune", finetune_sample_fn(ds, ft)}};
  for (const auto& [name, fn] : fns) {
    LoaderOptions o;
    o.batch_size = 5;
    o.drop_last = false;
    o.seed = 3;
    o.num_workers = 1;
    o.prefetch_batches = 1;
    Loader l1(ds->size(), fn, o);
    const auto ref0 = run_epoch(l1, 0), ref1 = run_epoch(l1, 1);
    ASSERT_EQ(ref0.size(), 5u);  // 24 samples in batches of 5, the last short
    EXPECT_EQ(ref0.back().size(), 4);
    ASSERT_EQ(ref0[0].images.size(), name == "pretrain" ? 2u : 1u);
    const int64_t side = name == "pretrain" ? 16 : 12;
    EXPECT_EQ(ref0[0].images[0].sizes(), torch::IntArrayRef({5, 3, side, side}));
    EXPECT_EQ(ref0[0].images[0].scalar_type(), torch::kUInt8);
    if (name == "pretrain") {
      EXPECT_EQ(ref0[0].images[1].sizes(), torch::IntArrayRef({5, 3, 8, 8}));
      EXPECT_EQ(ref0[0].masks.sizes(), torch::IntArrayRef({5, 16}));
      EXPECT_TRUE(ref0[0].masks.sum(1).eq(6).all().item<bool>());
    } else {
      EXPECT_FALSE(ref0[0].masks.defined());
    }
    EXPECT_FALSE(torch::equal(ref0[0].indices, ref1[0].indices)) << "epochs are shuffled differently";
    for (int workers : {2, 3}) {
      o.num_workers = workers;
      o.prefetch_batches = 2;
      Loader l(ds->size(), fn, o);
      expect_same_batches(run_epoch(l, 0), ref0, c10::str(name, ", ", workers, " workers, epoch 0"));
      expect_same_batches(run_epoch(l, 1), ref1, c10::str(name, ", ", workers, " workers, epoch 1"));
    }
    // Resuming mid-epoch gives the rest of the same epoch.
    o.num_workers = 2;
    Loader resumed(ds->size(), fn, o);
    const auto tail = run_epoch(resumed, 1, 2);
    expect_same_batches(tail, std::vector<Batch>(ref1.begin() + 2, ref1.end()), name + ", resumed at step 2");
  }
  // Labels come from the dataset.
  LoaderOptions o;
  o.batch_size = 24;
  Loader l(ds->size(), train_sample_fn(ds, one), o);
  const auto all = run_epoch(l, 0);
  for (int64_t i = 0; i < 24; ++i) {
    EXPECT_EQ(all[0].labels[i].item<int64_t>(), ds->label(all[0].indices[i].item<int64_t>()));
  }
}

/// A sample function without images work: a 1x1 view holding the index.
Sample tiny_sample(int64_t i, Rng&) {
  Sample s;
  s.views = {cv::Mat(1, 1, CV_8UC3, cv::Scalar(static_cast<double>(i % 256), 0, 0))};
  s.label = i;
  return s;
}

TEST(DataLoader, ShardingCoversTheDatasetOncePerEpoch) {
  for (const int64_t n : {100, 103}) {
    for (const bool drop_tail : {false, true}) {
      const int64_t world = 4;
      std::vector<int64_t> seen;
      std::set<int64_t> per_rank_counts;
      for (int64_t rank = 0; rank < world; ++rank) {
        LoaderOptions o;
        o.batch_size = 8;
        o.drop_last = false;
        o.world_size = world;
        o.rank = rank;
        o.seed = 11;
        o.shard_drop_tail = drop_tail;
        Loader l(n, tiny_sample, o);
        int64_t mine = 0;
        for (const auto& b : run_epoch(l, 2)) {
          for (int64_t i = 0; i < b.size(); ++i) seen.push_back(b.indices[i].item<int64_t>());
          mine += b.size();
        }
        EXPECT_EQ(mine, l.samples_per_rank());
        per_rank_counts.insert(mine);
      }
      EXPECT_EQ(per_rank_counts.size(), 1u) << "equal counts per rank";
      const std::set<int64_t> distinct(seen.begin(), seen.end());
      if (!drop_tail) {
        EXPECT_EQ(static_cast<int64_t>(distinct.size()), n) << "every sample visited (n " << n << ")";
        EXPECT_EQ(static_cast<int64_t>(seen.size()), (n + world - 1) / world * world) << "padding by wrapping";
      } else {
        EXPECT_EQ(static_cast<int64_t>(seen.size()), n / world * world);
        EXPECT_EQ(distinct.size(), seen.size()) << "no sample twice";
      }
      if (n % world == 0) {
        EXPECT_EQ(distinct.size(), seen.size()) << "n divisible: each sample exactly once";
      }
    }
  }
  // drop_last drops each rank's short final batch.
  LoaderOptions o;
  o.batch_size = 8;
  o.world_size = 4;
  Loader l(103, tiny_sample, o);
  EXPECT_EQ(l.samples_per_rank(), 26);
  EXPECT_EQ(l.batches_per_epoch(), 3);
  EXPECT_EQ(run_epoch(l, 0).size(), 3u);
}

TEST(DataLoader, OrderMatchesTorchDistributedSampler) {
  // The epoch order is torch.randperm(n) seeded with seed + epoch, padded and strided as DistributedSampler.
  // Needs a python with torch (the build env); skipped otherwise.
  const char* py = std::getenv("BEITV2_BUILD_PYTHON");
  const char* home = std::getenv("HOME");
  std::string exe = (fs::path(home ? home : "") / ".cache/beitv2/build-env/bin/python").string();
  if (py && fs::exists(py)) exe = py;
  if (!fs::exists(exe)) GTEST_SKIP() << "no build-env python with torch (BEITV2_BUILD_PYTHON)";
  test::TempDir tmp("sampler");
  const auto out = tmp.path() / "order.txt";
  const std::string cmd = exe +
                          " -c \"import torch.utils.data as d; s = d.DistributedSampler(range(103), num_replicas=4, "
                          "rank=1, shuffle=True, seed=11); s.set_epoch(5); print(' '.join(map(str, s)))\" > " +
                          out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(out);
  std::vector<int64_t> expected{std::istream_iterator<int64_t>(f), {}};
  LoaderOptions o;
  o.world_size = 4;
  o.rank = 1;
  o.seed = 11;
  Loader l(103, tiny_sample, o);
  EXPECT_EQ(l.epoch_indices(5), expected);
}

TEST(DataLoader, WorkerExceptionReachesTheCallerNamingTheFile) {
  auto fn = [](int64_t i, Rng& rng) {
    if (i == 7) throw std::runtime_error("/data/train/cls/file_0007.png: something broke");
    return tiny_sample(i, rng);
  };
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.num_workers = 3;
  Loader l(40, fn, o);
  l.start_epoch(0);
  try {
    while (l.next()) {
    }
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("file_0007.png"), std::string::npos) << e.what();
  }
  // The loader can start again after an error (the error is cleared by start_epoch) and still reports it.
  l.start_epoch(0);
  EXPECT_THROW(
      {
        while (l.next()) {
        }
      },
      std::runtime_error);
  // Invalid transform settings are rejected when the pipeline is built, before any work.
  test::TempDir tmp("transform_error");
  write_rgb(tmp.path() / "tiny.png", random_rgb(4, 4, 1));
  auto ds = std::make_shared<const ImageDataset>(ImageDataset::folder(tmp.path()));
  TwoViewTransform two;
  two.size = 0;
  EXPECT_THROW(pretrain_sample_fn(ds, two, MaskingGenerator(MaskingOptions{})), ConfigError);
  TrainTransform area;
  area.crop.interpolation = cv::INTER_AREA;  // not one of Pillow's filters
  EXPECT_THROW(train_sample_fn(ds, area), ConfigError);
}

TEST(DataLoader, StopsCleanlyMidEpoch) {
  std::atomic<int> calls{0};
  auto slow = [&](int64_t i, Rng& rng) {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return tiny_sample(i, rng);
  };
  LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 3;
  o.prefetch_batches = 2;
  const auto t0 = std::chrono::steady_clock::now();
  {
    Loader l(1000, slow, o);
    l.start_epoch(0);
    ASSERT_TRUE(l.next().has_value());
    l.start_epoch(1);  // abandon epoch 0 mid-way
    ASSERT_TRUE(l.next().has_value());
  }  // destructor: joins the workers with most of the epoch left
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(calls.load(), 100) << "prefetch is bounded";
  EXPECT_LT(s, 5.0);
  Loader idle(10, tiny_sample, o);  // never started: destroyed at once
  EXPECT_THROW(idle.next(), c10::Error);
  LoaderOptions bad;
  bad.rank = 4;
  bad.world_size = 4;
  EXPECT_THROW(Loader(10, tiny_sample, bad), ConfigError);
  EXPECT_THROW(Loader(0, tiny_sample, LoaderOptions{}), ConfigError);
}

TEST(DataLoader, ThreadsTheSystemRefusesAreAnErrorNotAnAbort) {
  LoaderOptions o;
  o.num_workers = 30000;
  EXPECT_THROW(Loader(10, tiny_sample, o), ConfigError);  // far past any machine: refused up front
  // Thread creation failing half-way used to leave the started threads joinable: std::terminate. A child process
  // whose address space has room for a few thread stacks only asks for 1000 workers.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto child = [] {
    long vm_kb = 0;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stol(line.substr(7));
    }
    rlimit lim{};
    getrlimit(RLIMIT_AS, &lim);
    lim.rlim_cur = static_cast<rlim_t>(vm_kb + 256 * 1024) * 1024;  // 256 MB more than now
    setrlimit(RLIMIT_AS, &lim);
    LoaderOptions many;
    many.num_workers = 1000;
    try {
      Loader l(10, tiny_sample, many);
      std::fprintf(stderr, "all 1000 threads started\n");
      std::_Exit(3);
    } catch (const std::runtime_error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      std::_Exit(std::string(e.what()).find("loader: cannot start 1000 worker threads") == 0 ? 0 : 2);
    }
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "loader: cannot start 1000 worker threads \\([0-9]+ started");
}

}  // namespace
}  // namespace beitv2
