// RandAugment (timm/data/auto_augment.py).
#include "beitv2/data/rand_augment.h"

#include <c10/util/StringUtil.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/pil_ops.h"

namespace beitv2::data {

RandAugmentOptions RandAugmentOptions::parse(const std::string& config) {
  RandAugmentOptions o;
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= config.size(); ++i) {
    if (i == config.size() || config[i] == '-') {
      parts.push_back(config.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.empty() || parts[0] != "rand") {
    throw ConfigError("rand_augment '" + config + "': must start with 'rand' (e.g. rand-m9-mstd0.5-inc1)");
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& s = parts[i];
    const size_t d = s.find_first_of("0123456789");
    const std::string key = s.substr(0, d == std::string::npos ? s.size() : d);
    const std::string val = d == std::string::npos ? "" : s.substr(d);
    double v = 0;
    try {
      size_t used = 0;
      v = std::stod(val, &used);
      if (used != val.size()) throw std::invalid_argument(val);
    } catch (const std::exception&) {
      throw ConfigError("rand_augment '" + config + "': section '" + s + "' needs a number (m9, n2, mstd0.5, inc1)");
    }
    if (key == "m") {
      o.magnitude = v;
    } else if (key == "n") {
      o.num_ops = static_cast<int>(v);
    } else if (key == "p") {
      o.prob = v;
    } else if (key == "mstd") {
      o.magnitude_std = v > 100 ? std::numeric_limits<double>::infinity() : v;
    } else if (key == "mmax") {
      o.magnitude_max = v;
    } else if (key == "inc") {
      o.increasing = v != 0;
    } else {
      throw ConfigError("rand_augment '" + config + "': unknown section '" + s + "' (m, n, p, mstd, mmax, inc)");
    }
  }
  if (o.num_ops < 0 || o.prob < 0 || o.prob > 1 || o.magnitude < 0 || o.magnitude_std < 0) {
    throw ConfigError("rand_augment '" + config + "': n, m, mstd must be >= 0 and p in [0, 1]");
  }
  return o;
}

std::string RandAugmentOptions::to_string() const {
  return c10::str("RandAugment(n=", num_ops, ", m=", magnitude, ", mstd=", magnitude_std, ", mmax=", magnitude_max,
                  ", p=", prob, ", inc=", increasing ? 1 : 0, ")");
}

const char* augment_op_name(AugmentOp op) {
  switch (op) {
    case AugmentOp::kAutoContrast: return "AutoContrast";
    case AugmentOp::kEqualize: return "Equalize";
    case AugmentOp::kInvert: return "Invert";
    case AugmentOp::kRotate: return "Rotate";
    case AugmentOp::kPosterize: return "Posterize";
    case AugmentOp::kPosterizeIncreasing: return "PosterizeIncreasing";
    case AugmentOp::kSolarize: return "Solarize";
    case AugmentOp::kSolarizeIncreasing: return "SolarizeIncreasing";
    case AugmentOp::kSolarizeAdd: return "SolarizeAdd";
    case AugmentOp::kColor: return "Color";
    case AugmentOp::kColorIncreasing: return "ColorIncreasing";
    case AugmentOp::kContrast: return "Contrast";
    case AugmentOp::kContrastIncreasing: return "ContrastIncreasing";
    case AugmentOp::kBrightness: return "Brightness";
    case AugmentOp::kBrightnessIncreasing: return "BrightnessIncreasing";
    case AugmentOp::kSharpness: return "Sharpness";
    case AugmentOp::kSharpnessIncreasing: return "SharpnessIncreasing";
    case AugmentOp::kShearX: return "ShearX";
    case AugmentOp::kShearY: return "ShearY";
    case AugmentOp::kTranslateXRel: return "TranslateXRel";
    case AugmentOp::kTranslateYRel: return "TranslateYRel";
  }
  return "?";
}

const std::vector<AugmentOp>& rand_augment_ops(bool increasing) {
  using A = AugmentOp;
  static const std::vector<AugmentOp> plain{
      A::kAutoContrast, A::kEqualize, A::kInvert, A::kRotate, A::kPosterize, A::kSolarize, A::kSolarizeAdd,
      A::kColor, A::kContrast, A::kBrightness, A::kSharpness, A::kShearX, A::kShearY, A::kTranslateXRel,
      A::kTranslateYRel};
  static const std::vector<AugmentOp> inc{
      A::kAutoContrast, A::kEqualize, A::kInvert, A::kRotate, A::kPosterizeIncreasing, A::kSolarizeIncreasing,
      A::kSolarizeAdd, A::kColorIncreasing, A::kContrastIncreasing, A::kBrightnessIncreasing,
      A::kSharpnessIncreasing, A::kShearX, A::kShearY, A::kTranslateXRel, A::kTranslateYRel};
  return increasing ? inc : plain;
}

void apply_augment_op_(cv::Mat& rgb, AugmentOp op, double level, const std::array<uint8_t, 3>& fill,
                       double translate_pct, Rng& rng) {
  // timm's _randomly_negate: -v if random.random() > 0.5.
  auto negate = [&](double v) { return rng.uniform() > 0.5 ? -v : v; };
  const double l = level / 10.0;  // _LEVEL_DENOM
  auto enhance = [&]() { return l * 1.8 + 0.1; };
  auto enhance_inc = [&]() { return std::max(0.1, 1.0 + negate(l * 0.9)); };
  using A = AugmentOp;
  switch (op) {
    case A::kAutoContrast: pil::autocontrast_(rgb); break;
    case A::kEqualize: pil::equalize_(rgb); break;
    case A::kInvert: pil::invert_(rgb); break;
    case A::kRotate: rgb = pil::rotate(rgb, negate(l * 30.0), cv::INTER_CUBIC, fill); break;
    case A::kPosterize: pil::posterize_(rgb, static_cast<int>(l * 4)); break;
    case A::kPosterizeIncreasing: pil::posterize_(rgb, 4 - static_cast<int>(l * 4)); break;
    case A::kSolarize: pil::solarize_(rgb, std::min(256, static_cast<int>(l * 256))); break;
    case A::kSolarizeIncreasing: pil::solarize_(rgb, 256 - std::min(256, static_cast<int>(l * 256))); break;
    case A::kSolarizeAdd: pil::solarize_add_(rgb, std::min(128, static_cast<int>(l * 110)), 128); break;
    case A::kColor: pil::enhance_color_(rgb, enhance()); break;
    case A::kColorIncreasing: pil::enhance_color_(rgb, enhance_inc()); break;
    case A::kContrast: pil::enhance_contrast_(rgb, enhance()); break;
    case A::kContrastIncreasing: pil::enhance_contrast_(rgb, enhance_inc()); break;
    case A::kBrightness: pil::enhance_brightness_(rgb, enhance()); break;
    case A::kBrightnessIncreasing: pil::enhance_brightness_(rgb, enhance_inc()); break;
    case A::kSharpness: pil::enhance_sharpness_(rgb, enhance()); break;
    case A::kSharpnessIncreasing: pil::enhance_sharpness_(rgb, enhance_inc()); break;
    case A::kShearX: rgb = pil::affine(rgb, {1, negate(l * 0.3), 0, 0, 1, 0}, cv::INTER_CUBIC, fill); break;
    case A::kShearY: rgb = pil::affine(rgb, {1, 0, 0, negate(l * 0.3), 1, 0}, cv::INTER_CUBIC, fill); break;
    case A::kTranslateXRel: {
      const double px = negate(l * translate_pct) * rgb.cols;
      rgb = pil::affine(rgb, {1, 0, px, 0, 1, 0}, cv::INTER_CUBIC, fill);
      break;
    }
    case A::kTranslateYRel: {
      const double px = negate(l * translate_pct) * rgb.rows;
      rgb = pil::affine(rgb, {1, 0, 0, 0, 1, px}, cv::INTER_CUBIC, fill);
      break;
    }
  }
}

RandAugment::RandAugment(RandAugmentOptions options)
    : options_(options), ops_(&rand_augment_ops(options.increasing)) {}

void RandAugment::apply_(cv::Mat& rgb, Rng& rng) const {
  const auto& o = options_;
  for (int i = 0; i < o.num_ops; ++i) {
    const AugmentOp op = (*ops_)[rng.below(ops_->size())];  // numpy choice with replacement
    if (o.prob < 1.0 && rng.uniform() > o.prob) continue;
    double m = o.magnitude;
    if (o.magnitude_std > 0) {
      m = std::isinf(o.magnitude_std) ? rng.uniform(0, m) : rng.normal(m, o.magnitude_std);
    }
    m = std::max(0.0, std::min(m, o.magnitude_max));
    apply_augment_op_(rgb, op, m, o.fill, o.translate_pct, rng);
  }
}

}  // namespace beitv2::data
