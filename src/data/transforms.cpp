#include "beitv2/data/transforms.h"

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/pil_ops.h"

namespace beitv2::data {

CropBox random_resized_crop_box(int height, int width, const std::array<double, 2>& scale,
                                const std::array<double, 2>& ratio, Rng& rng, bool* fallback) {
  TORCH_CHECK(height > 0 && width > 0, "random_resized_crop_box: empty image ", width, "x", height);
  const double area = static_cast<double>(height) * width;
  const double log_r0 = std::log(ratio[0]), log_r1 = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale[0], scale[1]);
    const double aspect = std::exp(rng.uniform(log_r0, log_r1));
    const int w = py_round(std::sqrt(target_area * aspect));
    const int h = py_round(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int top = static_cast<int>(rng.randint(0, height - h));
      const int left = static_cast<int>(rng.randint(0, width - w));
      if (fallback) *fallback = false;
      return {top, left, h, w};
    }
  }
  // Centre crop with the aspect clamped to the ratio range.
  const double in_ratio = static_cast<double>(width) / height;
  const double rmin = std::min(ratio[0], ratio[1]), rmax = std::max(ratio[0], ratio[1]);
  int w = width, h = height;
  if (in_ratio < rmin) {
    h = py_round(w / rmin);
  } else if (in_ratio > rmax) {
    w = py_round(h * rmax);
  }
  if (fallback) *fallback = true;
  return {(height - h) / 2, (width - w) / 2, h, w};
}

cv::Mat resized_crop(const cv::Mat& rgb, const CropBox& box, int out_h, int out_w, int interpolation) {
  TORCH_CHECK(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 && box.top + box.height <= rgb.rows &&
                  box.left + box.width <= rgb.cols,
              "resized_crop: box (top ", box.top, ", left ", box.left, ", ", box.width, "x", box.height,
              ") outside the ", rgb.cols, "x", rgb.rows, " image");
  return pil::resample(rgb(cv::Rect(box.left, box.top, box.width, box.height)), out_h, out_w, interpolation);
}

cv::Mat resize_shorter(const cv::Mat& rgb, int size, int interpolation) {
  TORCH_CHECK(size > 0, "resize_shorter: size ", size, " must be positive");
  const int h = rgb.rows, w = rgb.cols;
  if (h <= w) {
    return pil::resample(rgb, size, static_cast<int>(static_cast<int64_t>(size) * w / h), interpolation);
  }
  return pil::resample(rgb, static_cast<int>(static_cast<int64_t>(size) * h / w), size, interpolation);
}

cv::Mat center_crop(const cv::Mat& rgb, int height, int width) {
  TORCH_CHECK(height > 0 && width > 0 && height <= rgb.rows && width <= rgb.cols, "center_crop: ", width, "x",
              height, " does not fit in the ", rgb.cols, "x", rgb.rows, " image");
  const int top = py_round((rgb.rows - height) / 2.0);
  const int left = py_round((rgb.cols - width) / 2.0);
  return rgb(cv::Rect(left, top, width, height)).clone();
}

void hflip_(cv::Mat& rgb) { cv::flip(rgb, rgb, 1); }

void ColorJitter::validate() const {
  for (auto [name, v] : {std::pair{"brightness", brightness}, {"contrast", contrast}, {"saturation", saturation}}) {
    if (!(v >= 0)) throw ConfigError(c10::str("color_jitter.", name, " = ", v, " must be >= 0"));
  }
}

void ColorJitter::apply_(cv::Mat& rgb, Rng& rng) const {
  // torchvision: fn_idx = randperm(4) (hue included), then the factors of the enabled adjustments.
  std::vector<int> order{0, 1, 2, 3};
  rng.partial_shuffle(order, order.size());
  auto factor = [&](double x) { return x > 0 ? rng.uniform(std::max(0.0, 1.0 - x), 1.0 + x) : 1.0; };
  const double fb = factor(brightness), fc = factor(contrast), fs = factor(saturation);
  for (int op : order) {
    if (op == 0 && brightness > 0) pil::enhance_brightness_(rgb, fb);
    if (op == 1 && contrast > 0) pil::enhance_contrast_(rgb, fc);
    if (op == 2 && saturation > 0) pil::enhance_color_(rgb, fs);
  }
}

PhotoMetricDistortion::Draw PhotoMetricDistortion::sample(Rng& rng) const {
  // mmseg draws in this order: brightness, mode, contrast (where mode puts it), saturation, hue.
  Draw d;
  if (rng.bernoulli(0.5)) d.brightness = rng.uniform(-brightness_delta, brightness_delta);
  d.contrast_first = rng.bernoulli(0.5);
  auto contrast = [&] {
    if (rng.bernoulli(0.5)) d.contrast = rng.uniform(contrast_range[0], contrast_range[1]);
  };
  if (d.contrast_first) contrast();
  if (rng.bernoulli(0.5)) d.saturation = rng.uniform(saturation_range[0], saturation_range[1]);
  if (rng.bernoulli(0.5)) d.hue = static_cast<int>(rng.randint(-hue_delta, hue_delta - 1));  // numpy: high excluded
  if (!d.contrast_first) contrast();
  return d;
}

namespace {
// x -> uint8(clip(float32(x) * alpha + beta, 0, 255)), truncating, as mmseg's convert; a 256-entry table.
cv::Mat affine_lut(float alpha, float beta) {
  cv::Mat lut(1, 256, CV_8U);
  for (int v = 0; v < 256; ++v) {
    lut.at<uint8_t>(v) = static_cast<uint8_t>(std::clamp(static_cast<float>(v) * alpha + beta, 0.0F, 255.0F));
  }
  return lut;
}
// Applies `lut` to channel `c` of an HSV image (RGB in, RGB out).
void hsv_channel_(cv::Mat& rgb, int c, const cv::Mat& lut) {
  cv::Mat hsv;
  cv::cvtColor(rgb, hsv, cv::COLOR_RGB2HSV);
  std::vector<cv::Mat> ch;
  cv::split(hsv, ch);
  cv::LUT(ch[static_cast<size_t>(c)], lut, ch[static_cast<size_t>(c)]);
  cv::merge(ch, hsv);
  cv::cvtColor(hsv, rgb, cv::COLOR_HSV2RGB);
}
}  // namespace

void PhotoMetricDistortion::apply_(cv::Mat& rgb, const Draw& d) {
  TORCH_CHECK(rgb.type() == CV_8UC3, "PhotoMetricDistortion: expected uint8 RGB");
  if (d.brightness) cv::LUT(rgb, affine_lut(1.0F, static_cast<float>(*d.brightness)), rgb);
  auto contrast = [&] {
    if (d.contrast) cv::LUT(rgb, affine_lut(static_cast<float>(*d.contrast), 0.0F), rgb);
  };
  if (d.contrast_first) contrast();
  if (d.saturation) hsv_channel_(rgb, 1, affine_lut(static_cast<float>(*d.saturation), 0.0F));
  if (d.hue) {
    cv::Mat lut(1, 256, CV_8U);
    for (int v = 0; v < 256; ++v) lut.at<uint8_t>(v) = static_cast<uint8_t>((((v + *d.hue) % 180) + 180) % 180);
    hsv_channel_(rgb, 0, lut);
  }
  if (!d.contrast_first) contrast();
}

namespace {
void check_range(const char* what, const std::array<double, 2>& r, double lo_min) {
  if (!(r[0] > lo_min && r[0] <= r[1])) {
    throw ConfigError(c10::str(what, " = [", r[0], ", ", r[1], "] must satisfy ", lo_min, " < min <= max"));
  }
}
void check_prob(const char* what, double p) {
  if (!(p >= 0 && p <= 1)) throw ConfigError(c10::str(what, " = ", p, " must be in [0, 1]"));
}
void check_size(const char* what, int s) {
  if (s < 1) throw ConfigError(c10::str(what, " = ", s, " must be >= 1"));
}
void check_interpolation(const char* what, int code) {
  if (code != cv::INTER_CUBIC && code != cv::INTER_LINEAR && code != cv::INTER_LANCZOS4 && code != cv::INTER_NEAREST) {
    throw ConfigError(
        c10::str(what, " = ", code, ": not a supported interpolation (bicubic, bilinear, lanczos, nearest)"));
  }
}
}  // namespace

void RandomResizedCropOptions::validate() const {
  check_size("crop.size", size);
  check_range("crop.scale", scale, 0.0);
  check_range("crop.ratio", ratio, 0.0);
  check_interpolation("crop.interpolation", interpolation);
}

void TrainTransform::validate() const {
  crop.validate();
  check_prob("hflip", hflip);
  jitter.validate();
}

cv::Mat TrainTransform::operator()(const cv::Mat& rgb, Rng& rng) const {
  cv::Mat src = rgb;
  if (jitter.enabled()) {
    src = rgb.clone();
    jitter.apply_(src, rng);
  }
  const CropBox box = crop.sample_box(src.rows, src.cols, rng);
  cv::Mat out = resized_crop(src, box, crop.size, crop.size, crop.interpolation);
  if (rng.bernoulli(hflip)) hflip_(out);
  return out;
}

void TwoViewTransform::validate() const {
  jitter.validate();
  check_prob("hflip", hflip);
  check_range("scale", scale, 0.0);
  check_range("ratio", ratio, 0.0);
  check_size("size", size);
  check_size("second_size", second_size);
  check_interpolation("interpolation", interpolation);
  check_interpolation("second_interpolation", second_interpolation);
}

std::pair<cv::Mat, cv::Mat> TwoViewTransform::operator()(const cv::Mat& rgb, Rng& rng) const {
  cv::Mat src = rgb.clone();
  jitter.apply_(src, rng);
  const bool flip = rng.bernoulli(hflip);
  const CropBox box = random_resized_crop_box(src.rows, src.cols, scale, ratio, rng);
  std::pair<cv::Mat, cv::Mat> views{resized_crop(src, box, size, size, interpolation),
                                    resized_crop(src, box, second_size, second_size, second_interpolation)};
  if (flip) {
    hflip_(views.first);
    hflip_(views.second);
  }
  return views;
}

void FinetuneTransform::validate() const {
  crop.validate();
  check_prob("hflip", hflip);
}

cv::Mat FinetuneTransform::operator()(const cv::Mat& rgb, Rng& rng) const {
  const CropBox box = crop.sample_box(rgb.rows, rgb.cols, rng);
  cv::Mat out = resized_crop(rgb, box, crop.size, crop.size, crop.interpolation);
  if (rng.bernoulli(hflip)) hflip_(out);
  rand_augment.apply_(out, rng);
  return out;
}

void EvalTransform::validate() const {
  check_size("eval.crop", crop);
  if (!(crop_pct > 0 && crop_pct <= 1)) throw ConfigError(c10::str("eval.crop_pct = ", crop_pct, " must be in (0, 1]"));
  check_interpolation("eval.interpolation", interpolation);
  if (resize != 0 && resize < crop) {
    throw ConfigError(c10::str("eval.resize = ", resize, " must be 0 (from crop_pct) or >= eval.crop = ", crop));
  }
}

cv::Mat EvalTransform::operator()(const cv::Mat& rgb) const {
  return center_crop(resize_shorter(rgb, resize_size(), interpolation), crop, crop);
}

}  // namespace beitv2::data
