#pragma once
// Random and deterministic image transforms on uint8 RGB images (cv::Mat CV_8UC3), with an explicit Rng.
//
// Semantics are torchvision's on PIL images (the reference pipelines of docs/reference.md §2, §3.5, §5); pixel
// operations are Pillow's (data/pil_ops.h). Each random transform takes the sample's Rng (data/rng.h), so a sample's
// augmentation depends only on (seed, epoch, index).
//
// Pipelines (§ = sections of docs/reference.md):
//   TrainTransform    VQ-KD training / linear probe: [ColorJitter] -> RandomResizedCrop -> hflip   (§2)
//   TwoViewTransform  BEiT v2 pretraining: ColorJitter(0.4) -> hflip -> one crop box, two sizes  (§3.5)
//   FinetuneTransform fine-tuning: RandomResizedCrop -> hflip -> RandAugment                      (§5)
//                     (then, on the device: normalise, RandomErasing — data/random_erasing.h)
//   EvalTransform     Resize(crop / crop_pct) -> CenterCrop(crop), bicubic                          (§2, §5)
// Normalisation is not done here: images travel as uint8 and are normalised on the device (normalize_images).

#include <opencv2/core/mat.hpp>
#include <opencv2/imgproc.hpp>  // cv::INTER_* interpolation codes

#include <array>
#include <optional>
#include <string>
#include <utility>

#include "beitv2/data/rand_augment.h"
#include "beitv2/data/rng.h"

namespace beitv2::data {

/// A crop box in pixels: torchvision's (i, j, h, w) = (top, left, height, width).
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
  bool operator==(const CropBox&) const = default;
};

/// torchvision RandomResizedCrop.get_params for an image of `height` x `width`: up to 10 tries of
/// area ~ U(scale) * H * W and aspect w/h = exp(U(log ratio)), w = round(sqrt(area * aspect)),
/// h = round(sqrt(area / aspect)) (Python rounding), accepted if 0 < w <= W and 0 < h <= H, top ~ randint[0, H-h],
/// left ~ randint[0, W-w]; otherwise the centre crop with the aspect clamped to `ratio`. `fallback`, when given,
/// says whether the centre crop was used.
CropBox random_resized_crop_box(int height, int width, const std::array<double, 2>& scale,
                                const std::array<double, 2>& ratio, Rng& rng, bool* fallback = nullptr);

/// torchvision F.resized_crop on a PIL image: crop `box`, then Image.resize to out_h x out_w.
cv::Mat resized_crop(const cv::Mat& rgb, const CropBox& box, int out_h, int out_w, int interpolation);

/// torchvision Resize(size) (an int): the shorter side becomes `size`, the longer int(size * long / short).
cv::Mat resize_shorter(const cv::Mat& rgb, int size, int interpolation);

/// torchvision CenterCrop: top = round((H - h) / 2), left = round((W - w) / 2) (Python rounding). The crop must
/// fit (torchvision would pad; we refuse). Returns a copy.
cv::Mat center_crop(const cv::Mat& rgb, int height, int width);

/// Mirror left-right, in place.
void hflip_(cv::Mat& rgb);

/// torchvision ColorJitter(brightness, contrast, saturation, hue = 0) on a PIL image: the enabled adjustments in a
/// random order (a random permutation of the four), each factor ~ U[max(0, 1 - x), 1 + x]; Pillow's ImageEnhance.
/// Hue jitter is not implemented (BEiT v2 uses 0).
///
/// Example (docs/reference.md §3.5): ColorJitter{0.4, 0.4, 0.4}.apply_(img, rng);
struct ColorJitter {
  double brightness = 0.0;
  double contrast = 0.0;
  double saturation = 0.0;

  bool enabled() const { return brightness > 0 || contrast > 0 || saturation > 0; }
  void apply_(cv::Mat& rgb, Rng& rng) const;
  /// Throws ConfigError for a negative strength.
  void validate() const;
};

/// mmseg's PhotoMetricDistortion (0.11, datasets/pipelines/transforms.py) on uint8 RGB, the segmentation
/// training recipe's colour jitter. Each step runs with probability 1/2; every step saturates to uint8 by
/// truncation (numpy's clip then astype(uint8)):
///   brightness  x + U[-32, 32)
///   contrast    x * U[0.5, 1.5), before the HSV steps (mode 1) or after them (mode 0), mode ~ randint(2)
///   saturation  S * U[0.5, 1.5) in OpenCV's 8-bit HSV
///   hue         H + randint[-18, 18) mod 180 in OpenCV's 8-bit HSV (H in [0, 180))
/// RGB <-> HSV is OpenCV's uint8 conversion, as mmcv's bgr2hsv on BGR images.
struct PhotoMetricDistortion {
  double brightness_delta = 32;
  std::array<double, 2> contrast_range{0.5, 1.5};
  std::array<double, 2> saturation_range{0.5, 1.5};
  int hue_delta = 18;

  /// One draw; a step that does not run is left empty.
  struct Draw {
    std::optional<double> brightness, contrast, saturation;
    std::optional<int> hue;
    bool contrast_first = false;  ///< mmseg's mode == 1
  };
  Draw sample(Rng& rng) const;
  static void apply_(cv::Mat& rgb, const Draw& d);
  void apply_(cv::Mat& rgb, Rng& rng) const { apply_(rgb, sample(rng)); }
};

/// RandomResizedCrop settings (torchvision defaults, bicubic as every BEiT v2 recipe).
struct RandomResizedCropOptions {
  int size = 224;                                      ///< output height = width
  std::array<double, 2> scale{0.08, 1.0};              ///< area fraction range
  std::array<double, 2> ratio{3.0 / 4.0, 4.0 / 3.0};   ///< aspect (w/h) range
  int interpolation = cv::INTER_CUBIC;                 ///< cv::INTER_* (parse_interpolation)

  void validate() const;
  /// The box for an image of `height` x `width`.
  CropBox sample_box(int height, int width, Rng& rng) const {
    return random_resized_crop_box(height, width, scale, ratio, rng);
  }
};

/// Tokenizer training / linear probing (docs/reference.md §2): [ColorJitter if enabled] -> RandomResizedCrop ->
/// hflip.
struct TrainTransform {
  RandomResizedCropOptions crop;
  double hflip = 0.5;   ///< flip probability
  ColorJitter jitter;   ///< off by default (`--color_jitter 0`)

  /// uint8 RGB (any size) -> crop.size x crop.size uint8 RGB.
  cv::Mat operator()(const cv::Mat& rgb, Rng& rng) const;
  void validate() const;
};

/// BEiT v2 pretraining views (docs/reference.md §3.5, DataAugmentationForBEiT): ColorJitter(0.4, 0.4, 0.4)
/// always, hflip 0.5, then ONE RandomResizedCrop box (scale (0.2, 1) in the recipe) resized to `size` with
/// `interpolation` (the student view) and to `second_size` with `second_interpolation` (the tokenizer view).
/// The flip is applied to both outputs instead of the input (docs/divergences.md D8): mirror(crop(I, box)) =
/// crop(mirror(I), box') with box' the mirrored box, which has the same distribution, so the views are
/// distributed exactly as the reference's while skipping a full-size flip.
struct TwoViewTransform {
  ColorJitter jitter{0.4, 0.4, 0.4};
  double hflip = 0.5;
  std::array<double, 2> scale{0.2, 1.0};
  std::array<double, 2> ratio{3.0 / 4.0, 4.0 / 3.0};
  int size = 224;
  int second_size = 224;
  int interpolation = cv::INTER_CUBIC;
  int second_interpolation = cv::INTER_CUBIC;  ///< beit2/PRETRAINING.md: bicubic (the code's default is lanczos)

  /// uint8 RGB -> {student view size x size, tokenizer view second_size x second_size}.
  std::pair<cv::Mat, cv::Mat> operator()(const cv::Mat& rgb, Rng& rng) const;
  void validate() const;
};

/// Fine-tuning (docs/reference.md §5, timm create_transform): RandomResizedCrop(224, (0.08, 1), bicubic) ->
/// hflip 0.5 -> RandAugment rand-m9-mstd0.5-inc1. Normalisation and RandomErasing follow on the device.
struct FinetuneTransform {
  RandomResizedCropOptions crop;
  double hflip = 0.5;
  RandAugment rand_augment{RandAugmentOptions::parse("rand-m9-mstd0.5-inc1")};

  cv::Mat operator()(const cv::Mat& rgb, Rng& rng) const;
  void validate() const;
};

/// Evaluation (docs/reference.md §2, §5): Resize(int(crop / crop_pct)) (shorter side; 256 for 224) ->
/// CenterCrop(crop).
struct EvalTransform {
  int crop = 224;
  double crop_pct = 224.0 / 256.0;
  int interpolation = cv::INTER_CUBIC;
  int resize = 0;  ///< shorter side before the crop, when given (>= crop); 0 = int(crop / crop_pct)

  int resize_size() const { return resize > 0 ? resize : static_cast<int>(crop / crop_pct); }
  cv::Mat operator()(const cv::Mat& rgb) const;
  void validate() const;
};

}  // namespace beitv2::data
