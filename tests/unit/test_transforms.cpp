// Transforms: RandomResizedCrop box statistics against torchvision, geometry and rounding, the two-view crop,
// colour jitter ranges, RandAugment config strings, RandomErasing, PhotoMetricDistortion's draws.
#include <set>

#include "data_helpers.h"

namespace beitv2 {
namespace {

using namespace beitv2::test;

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

// mmseg's PhotoMetricDistortion draws: each step with probability 1/2 (binomial, 5 sigma over 2000 draws),
// brightness in [-32, 32), contrast and saturation in [0.5, 1.5), hue an integer in [-18, 17] (numpy's randint
// excludes the high end), every hue value reached.
TEST(DataTransforms, PhotoMetricDistortionDrawsMmsegsRanges) {
  PhotoMetricDistortion pmd;
  Rng rng(11);
  const int n = 2000;
  int brightness = 0, contrast = 0, first = 0, saturation = 0, hue = 0;
  std::set<int> hues;
  for (int i = 0; i < n; ++i) {
    const auto d = pmd.sample(rng);
    if (d.brightness) {
      ++brightness;
      EXPECT_TRUE(*d.brightness >= -32 && *d.brightness < 32);
    }
    if (d.contrast) {
      ++contrast;
      EXPECT_TRUE(*d.contrast >= 0.5 && *d.contrast < 1.5);
    }
    if (d.saturation) {
      ++saturation;
      EXPECT_TRUE(*d.saturation >= 0.5 && *d.saturation < 1.5);
    }
    if (d.hue) {
      ++hue;
      hues.insert(*d.hue);
    }
    first += d.contrast_first;
  }
  const double tol = 5 * std::sqrt(n * 0.25);
  for (int count : {brightness, contrast, first, saturation, hue}) EXPECT_NEAR(count, n / 2, tol);
  EXPECT_EQ(hues.size(), 36u);
  EXPECT_EQ(*hues.begin(), -18);
  EXPECT_EQ(*hues.rbegin(), 17);
  // A draw with every step off leaves the image as it was.
  cv::Mat img = random_rgb(5, 7, 3), out = img.clone();
  PhotoMetricDistortion::apply_(out, {});
  EXPECT_EQ(cv::norm(img, out, cv::NORM_INF), 0);
}

}  // namespace
}  // namespace beitv2
