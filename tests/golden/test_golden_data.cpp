// Pixel-exact agreement with the reference pipelines: our Pillow-compatible operations (data/pil_ops.h) and
// transforms against Pillow, torchvision's PIL functional API and timm's RandAugment op functions, run by
// tests/reference/pil_ops_ref.py in the reference environment (BEITV2_REF_PYTHON, set by scripts/test.sh);
// skipped when that is absent. Suite names contain "Golden" (ctest label golden).
//
// Tolerance: exact (max |diff| 0) for every operation: the re-implementations follow Pillow's fixed-point and
// float32 arithmetic step by step, so any difference is a bug (the message names the operation).
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <fstream>
#include <functional>

#include "beitv2/data.h"
#include "common.h"

namespace beitv2 {
namespace {

namespace fs = std::filesystem;
using namespace beitv2::data;

struct Job {
  nlohmann::json spec;                   // what Python runs (input, op, args, out)
  std::function<cv::Mat()> ours;         // what we compute
  std::vector<std::string> alternatives; // further acceptable outputs (the other sign of a signed op)
};

cv::Mat read_png(const fs::path& p) { return load_rgb(p); }

void write_png(const fs::path& p, const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imwrite(p.string(), bgr));
}

class DataGoldenPil : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* py = std::getenv("BEITV2_REF_PYTHON");
    if (!py || !fs::exists(py)) GTEST_SKIP() << "BEITV2_REF_PYTHON not set: no reference environment";
    python_ = py;
    // a: small random structured image (odd sizes); b: a real photo crop; c: low contrast (for autocontrast).
    cv::Mat a(37, 53, CV_8UC3);
    cv::RNG rng(3);
    rng.fill(a, cv::RNG::UNIFORM, 0, 256);
    cv::GaussianBlur(a, a, cv::Size(5, 5), 0);
    images_["a"] = a;
    images_["b"] = load_rgb(test::photos_dir() / "baboon.jpg")(cv::Rect(100, 80, 200, 150)).clone();
    cv::Mat c;
    images_["b"].convertTo(c, CV_8UC3, 0.35, 60);
    images_["c"] = c;
    for (const auto& [k, v] : images_) write_png(dir_ / (k + ".png"), v);
  }

  void add(const std::string& input, nlohmann::json spec, std::function<cv::Mat(const cv::Mat&)> ours,
           std::vector<nlohmann::json> alternatives = {}) {
    const std::string out = "out" + std::to_string(jobs_.size()) + ".png";
    spec["input"] = input + ".png";
    spec["out"] = out;
    Job job{spec, [this, input, ours] { return ours(images_.at(input)); }, {}};
    jobs_.push_back(job);
    for (auto& alt : alternatives) {
      alt["input"] = input + ".png";
      alt["out"] = "alt" + std::to_string(jobs_.size()) + "_" + std::to_string(jobs_.back().alternatives.size()) +
                   ".png";
      jobs_.back().alternatives.push_back(alt["out"]);
      extra_.push_back(alt);
    }
  }

  void run_and_compare() {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& j : jobs_) all.push_back(j.spec);
    for (const auto& e : extra_) all.push_back(e);
    std::ofstream(dir_ / "jobs.json") << all.dump();
    const std::string cmd = python_ + " " + (test::source_dir() / "tests/reference/pil_ops_ref.py").string() +
                            " --dir " + dir_.path().string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    for (const auto& j : jobs_) {
      const cv::Mat ours = j.ours();
      std::vector<std::string> outs{j.spec["out"].get<std::string>()};
      outs.insert(outs.end(), j.alternatives.begin(), j.alternatives.end());
      double best = 1e9;
      for (const auto& o : outs) {
        const cv::Mat ref = read_png(dir_ / o);
        if (ref.size() != ours.size()) {
          ADD_FAILURE() << j.spec.dump() << ": size " << ours.size() << " vs reference " << ref.size();
          best = 0;
          break;
        }
        best = std::min(best, cv::norm(ours, ref, cv::NORM_INF));
      }
      EXPECT_EQ(best, 0) << j.spec.dump() << ": max |diff| " << best
                         << " (regenerate nothing: the reference runs at test time)";
    }
  }

  std::string python_;
  test::TempDir dir_{"pil"};  // the images, the job list and the reference outputs
  std::map<std::string, cv::Mat> images_;
  std::vector<Job> jobs_;
  std::vector<nlohmann::json> extra_;
};

int interp(const std::string& name) { return parse_interpolation(name); }

TEST_F(DataGoldenPil, ResizeAndCropsMatchPillowAndTorchvision) {
  // Sizes cover up/down-scaling, one pass only, and both pass orders (Pillow 13 runs the vertical pass first
  // for a -> 10x50, b -> 20x190 and the 101x77 -> 56 crop).
  struct R {
    std::string in;
    int h, w;
  };
  for (const std::string f : {"bicubic", "bilinear", "lanczos", "nearest"}) {
    for (const R& r : std::vector<R>{{"a", 224, 224}, {"b", 48, 64}, {"b", 150, 97}, {"b", 71, 200}, {"a", 90, 20},
                                             {"a", 10, 50}, {"b", 20, 190}}) {
      add(r.in, {{"op", "resize"}, {"size", {r.h, r.w}}, {"filter", f}},
          [=](const cv::Mat& m) { return pil::resample(m, r.h, r.w, interp(f)); });
    }
  }
  struct C {
    CropBox box;
    int size;
    std::string f;
  };
  for (const C& c : std::vector<C>{{{10, 20, 100, 120}, 224, "bicubic"}, {{0, 0, 150, 200}, 64, "bicubic"},
                                   {{5, 7, 33, 41}, 224, "lanczos"}, {{40, 3, 101, 77}, 56, "bilinear"}}) {
    add("b",
        {{"op", "tv_resized_crop"}, {"box", {c.box.top, c.box.left, c.box.height, c.box.width}},
         {"size", {c.size, c.size}}, {"filter", c.f}},
        [=](const cv::Mat& m) { return resized_crop(m, c.box, c.size, c.size, interp(c.f)); });
  }
  // Resize(64) + CenterCrop(56): 150x200 -> 64x85, left = round(14.5) = 14 (Python rounding).
  add("b", {{"op", "tv_resize_center_crop"}, {"resize", 64}, {"crop", {56, 56}}, {"filter", "bicubic"}},
      [](const cv::Mat& m) { return center_crop(resize_shorter(m, 64, cv::INTER_CUBIC), 56, 56); });
  EvalTransform ev;
  ev.crop = 112;
  add("b", {{"op", "tv_resize_center_crop"}, {"resize", 128}, {"crop", {112, 112}}, {"filter", "bicubic"}},
      [=](const cv::Mat& m) { return ev(m); });
  run_and_compare();
}

TEST_F(DataGoldenPil, ColorJitterOpsMatchTorchvision) {
  for (const double f : {0.0, 0.6, 0.83, 1.37, 1.4}) {
    add("b", {{"op", "tv_brightness"}, {"factor", f}}, [=](const cv::Mat& m) {
      cv::Mat o = m.clone();
      pil::enhance_brightness_(o, f);
      return o;
    });
    add("b", {{"op", "tv_contrast"}, {"factor", f}}, [=](const cv::Mat& m) {
      cv::Mat o = m.clone();
      pil::enhance_contrast_(o, f);
      return o;
    });
    add("a", {{"op", "tv_saturation"}, {"factor", f}}, [=](const cv::Mat& m) {
      cv::Mat o = m.clone();
      pil::enhance_color_(o, f);
      return o;
    });
  }
  run_and_compare();
}

TEST_F(DataGoldenPil, RandAugmentOpsMatchTimm) {
  const std::array<uint8_t, 3> fill{124, 116, 104};
  auto inplace = [](std::function<void(cv::Mat&)> f) {
    return [f](const cv::Mat& m) {
      cv::Mat o = m.clone();
      f(o);
      return o;
    };
  };
  using J = nlohmann::json;
  for (const std::string in : {"a", "b", "c"}) {
    add(in, {{"op", "timm:AutoContrast"}, {"args", J::array()}}, inplace([](cv::Mat& m) { pil::autocontrast_(m); }));
    add(in, {{"op", "timm:Equalize"}, {"args", J::array()}}, inplace([](cv::Mat& m) { pil::equalize_(m); }));
    add(in, {{"op", "timm:Invert"}, {"args", J::array()}}, inplace([](cv::Mat& m) { pil::invert_(m); }));
    for (int bits : {0, 1, 3, 4}) {
      add(in, {{"op", "timm:Posterize"}, {"args", {bits}}}, inplace([=](cv::Mat& m) { pil::posterize_(m, bits); }));
    }
    for (int t : {0, 26, 128, 256}) {
      add(in, {{"op", "timm:Solarize"}, {"args", {t}}}, inplace([=](cv::Mat& m) { pil::solarize_(m, t); }));
    }
    add(in, {{"op", "timm:SolarizeAdd"}, {"args", {99}}}, inplace([](cv::Mat& m) { pil::solarize_add_(m, 99, 128); }));
    for (double f : {0.1, 0.55, 1.81, 1.9}) {
      add(in, {{"op", "timm:Color"}, {"args", {f}}}, inplace([=](cv::Mat& m) { pil::enhance_color_(m, f); }));
      add(in, {{"op", "timm:Contrast"}, {"args", {f}}}, inplace([=](cv::Mat& m) { pil::enhance_contrast_(m, f); }));
      add(in, {{"op", "timm:Brightness"}, {"args", {f}}}, inplace([=](cv::Mat& m) { pil::enhance_brightness_(m, f); }));
      add(in, {{"op", "timm:Sharpness"}, {"args", {f}}}, inplace([=](cv::Mat& m) { pil::enhance_sharpness_(m, f); }));
    }
    for (double deg : {17.3, -29.0, 90.0}) {
      add(in, {{"op", "timm:Rotate"}, {"args", {deg}}},
          [=](const cv::Mat& m) { return pil::rotate(m, deg, cv::INTER_CUBIC, fill); });
    }
    for (double s : {0.27, -0.13}) {
      add(in, {{"op", "timm:ShearX"}, {"args", {s}}},
          [=](const cv::Mat& m) { return pil::affine(m, {1, s, 0, 0, 1, 0}, cv::INTER_CUBIC, fill); });
      add(in, {{"op", "timm:ShearY"}, {"args", {s}}},
          [=](const cv::Mat& m) { return pil::affine(m, {1, 0, 0, s, 1, 0}, cv::INTER_CUBIC, fill); });
    }
    for (double p : {0.41, -0.2}) {
      add(in, {{"op", "timm:TranslateXRel"}, {"args", {p}}},
          [=](const cv::Mat& m) { return pil::affine(m, {1, 0, p * m.cols, 0, 1, 0}, cv::INTER_CUBIC, fill); });
      add(in, {{"op", "timm:TranslateYRel"}, {"args", {p}}},
          [=](const cv::Mat& m) { return pil::affine(m, {1, 0, 0, 0, 1, p * m.rows}, cv::INTER_CUBIC, fill); });
    }
  }
  // Level -> argument mapping of the 'inc1' ops at level 9 (timm's *_level_to_arg): the sign of signed ops is
  // random, so either sign is accepted.
  struct L {
    AugmentOp op;
    std::string name;
    double arg;  // timm's argument at level 9 (positive sign)
    bool is_signed;
  };
  const double l = 9.0;
  for (const L& c : std::vector<L>{{AugmentOp::kRotate, "Rotate", 27.0, true},
                                   {AugmentOp::kShearX, "ShearX", 0.27, true},
                                   {AugmentOp::kTranslateYRel, "TranslateYRel", 0.405, true},
                                   {AugmentOp::kBrightnessIncreasing, "BrightnessIncreasing", 1.81, false},
                                   {AugmentOp::kSharpnessIncreasing, "SharpnessIncreasing", 1.81, false},
                                   {AugmentOp::kPosterizeIncreasing, "PosterizeIncreasing", 1, false},
                                   {AugmentOp::kSolarizeIncreasing, "SolarizeIncreasing", 26, false},
                                   {AugmentOp::kSolarizeAdd, "SolarizeAdd", 99, false}}) {
    for (int64_t seed = 0; seed < 2; ++seed) {
      std::vector<nlohmann::json> alts;
      // Increasing enhance ops take 1 +- 0.81; signed geometric ops +-arg.
      if (c.is_signed) alts.push_back({{"op", "timm:" + c.name}, {"args", {-c.arg}}});
      if (c.name == "BrightnessIncreasing" || c.name == "SharpnessIncreasing") {
        alts.push_back({{"op", "timm:" + c.name}, {"args", {2.0 - c.arg}}});
      }
      const bool integer =
          c.name.find("Posterize") != std::string::npos || c.name.find("Solarize") != std::string::npos;
      const nlohmann::json arg = integer ? nlohmann::json(static_cast<int>(c.arg)) : nlohmann::json(c.arg);
      add("b", {{"op", "timm:" + c.name}, {"args", {arg}}},
          [=](const cv::Mat& m) {
            cv::Mat o = m.clone();
            auto rng = Rng::for_sample(seed, 0, 0);
            apply_augment_op_(o, c.op, l, fill, 0.45, rng);
            return o;
          },
          alts);
    }
  }
  run_and_compare();
}

}  // namespace
}  // namespace beitv2
