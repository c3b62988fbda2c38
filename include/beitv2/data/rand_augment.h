#pragma once
// RandAugment with timm's semantics (timm/data/auto_augment.py; the fine-tuning recipe's rand-m9-mstd0.5-inc1).
//
// Per image: `num_ops` ops drawn uniformly WITH replacement from the op list; each is applied with probability
// `prob` (0.5); its magnitude ~ Normal(m, mstd) clipped to [0, 10] per application; signed ops negate their
// argument with probability 0.5. Op arguments (level in [0, 10]):
//   Rotate ±30·l/10 degrees, ShearX/Y ±0.3·l/10, TranslateX/YRel ±0.45·l/10 of the size (bicubic, fill = mean),
//   AutoContrast, Equalize, Invert (no argument), SolarizeAdd +int(110·l/10) below 128,
//   'inc1' (increasing) variants: PosterizeIncreasing keeps 4 - int(4·l/10) bits, SolarizeIncreasing threshold
//   256 - int(256·l/10), Color/Contrast/Brightness/SharpnessIncreasing factor max(0.1, 1 ± 0.9·l/10);
//   without 'inc': Posterize int(4·l/10) bits, Solarize threshold int(256·l/10), enhance factor 1.8·l/10 + 0.1.
// Pixel ops are Pillow's (data/pil_ops.h). Geometric ops use bicubic with fill = round(255 * mean) per channel
// (timm's img_mean hparam; (124, 116, 104) for the ImageNet mean), as create_transform sets them.

#include <opencv2/core/mat.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "beitv2/data/rng.h"

namespace beitv2::data {

/// RandAugment settings; `parse` reads timm's config strings.
///
/// Example: auto opts = RandAugmentOptions::parse("rand-m9-mstd0.5-inc1");   // the BEiT v2 fine-tuning recipe
struct RandAugmentOptions {
  int num_ops = 2;                 ///< 'n': ops per image
  double magnitude = 10.0;         ///< 'm': level in [0, 10]
  double magnitude_std = 0.0;      ///< 'mstd': Normal noise on the level; infinite = uniform in [0, m]
  double magnitude_max = 10.0;     ///< 'mmax': upper clip of the level
  double prob = 0.5;               ///< 'p': probability of applying each drawn op
  bool increasing = false;         ///< 'inc': the increasing-severity op list
  std::array<uint8_t, 3> fill{124, 116, 104};  ///< fill of geometric ops (round(255 * ImageNet mean))
  double translate_pct = 0.45;     ///< TranslateX/YRel range (fraction of the size)

  /// Parses "rand-m9-mstd0.5-inc1"-style strings (sections m, n, p, mstd, mmax, inc, as timm's
  /// rand_augment_transform); throws ConfigError naming the bad section.
  static RandAugmentOptions parse(const std::string& config);
  std::string to_string() const;
};

/// One RandAugment op kind (timm's names).
enum class AugmentOp {
  kAutoContrast, kEqualize, kInvert, kRotate, kPosterize, kPosterizeIncreasing, kSolarize, kSolarizeIncreasing,
  kSolarizeAdd, kColor, kColorIncreasing, kContrast, kContrastIncreasing, kBrightness, kBrightnessIncreasing,
  kSharpness, kSharpnessIncreasing, kShearX, kShearY, kTranslateXRel, kTranslateYRel,
};

/// timm's name of an op ("PosterizeIncreasing", ...).
const char* augment_op_name(AugmentOp op);

/// timm's op lists: _RAND_TRANSFORMS (15 ops) or _RAND_INCREASING_TRANSFORMS (15 ops, 'inc1').
const std::vector<AugmentOp>& rand_augment_ops(bool increasing);

/// Applies one op at level `level` in place; `rng` decides the sign of signed ops (timm's _randomly_negate).
void apply_augment_op_(cv::Mat& rgb, AugmentOp op, double level, const std::array<uint8_t, 3>& fill,
                       double translate_pct, Rng& rng);

class RandAugment {
 public:
  explicit RandAugment(RandAugmentOptions options = {});
  /// Applies num_ops random ops to a uint8 RGB image, in place.
  void apply_(cv::Mat& rgb, Rng& rng) const;
  const RandAugmentOptions& options() const { return options_; }

 private:
  RandAugmentOptions options_;
  const std::vector<AugmentOp>* ops_;
};

}  // namespace beitv2::data
