#pragma once
// Pillow-compatible operations on 8-bit RGB images (cv::Mat CV_8UC3, RGB order).
//
// The reference pipelines (torchvision on PIL images, timm's RandAugment) run these Pillow functions; they are
// re-implemented here from Pillow's documented algorithms so that our augmentations give the same pixels:
//   - resample():   Image.resize (Resample.c: separable, antialiased when shrinking, 22-bit fixed point)
//   - blend():      Image.blend (float32 blend, truncated and clipped), used by every ImageEnhance class
//   - enhance_*():  ImageEnhance.Brightness / Contrast / Color / Sharpness
//   - LUT ops:      ImageOps.autocontrast / equalize / invert / posterize / solarize, timm's solarize_add
//   - affine():     Image.transform(AFFINE) with BICUBIC/BILINEAR/NEAREST and a fill colour (Geometry.c);
//                   rotate() = Image.rotate(angle, fillcolor) without expand
// tests/unit/test_data_reference.cpp compares each against Pillow (reference environment) pixel by pixel.
//
// Inputs must be CV_8UC3 (any ROI); outputs are new continuous CV_8UC3 images unless the name ends in `_`.

#include <opencv2/core/mat.hpp>

#include <array>

namespace beitv2::data::pil {

/// Image.resize((width, height), filter) of `src` (a crop is resized by passing the ROI).
/// `interpolation`: cv::INTER_CUBIC (Pillow BICUBIC, a = -0.5), cv::INTER_LINEAR (BILINEAR), cv::INTER_LANCZOS4
/// (LANCZOS, a = 3), cv::INTER_NEAREST (NEAREST). Antialiased like Pillow: the kernel widens by the shrink factor.
cv::Mat resample(const cv::Mat& src, int height, int width, int interpolation);

/// Image.blend(a, b, alpha) = a + alpha * (b - a), float32, truncated toward zero and clipped to [0, 255].
cv::Mat blend(const cv::Mat& a, const cv::Mat& b, double alpha);

/// Image.convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (ITU-R 601-2 luma), one channel.
cv::Mat to_grey(const cv::Mat& rgb);

/// ImageEnhance.Brightness(img).enhance(f): blend with black. In place.
void enhance_brightness_(cv::Mat& rgb, double factor);
/// ImageEnhance.Contrast(img).enhance(f): blend with the rounded mean grey level of the image. In place.
void enhance_contrast_(cv::Mat& rgb, double factor);
/// ImageEnhance.Color(img).enhance(f): blend with the image's grey version (saturation). In place.
void enhance_color_(cv::Mat& rgb, double factor);
/// ImageEnhance.Sharpness(img).enhance(f): blend with ImageFilter.SMOOTH (3x3 [1 1 1; 1 5 1; 1 1 1]/13, border
/// pixels unfiltered). In place.
void enhance_sharpness_(cv::Mat& rgb, double factor);

/// ImageOps.autocontrast(img) (cutoff 0): each channel stretched so its min maps to 0 and max to 255. In place.
void autocontrast_(cv::Mat& rgb);
/// ImageOps.equalize(img): per-channel histogram equalisation (Pillow's step rule). In place.
void equalize_(cv::Mat& rgb);
/// ImageOps.invert(img): 255 - v. In place.
void invert_(cv::Mat& rgb);
/// ImageOps.posterize(img, bits): keeps the top `bits` bits; bits 0 gives black (Pillow < 10 behaviour, which
/// the reference timm 0.4.12 ran with; Pillow >= 10 rejects 0), bits >= 8 leaves the image unchanged. In place.
void posterize_(cv::Mat& rgb, int bits);
/// ImageOps.solarize(img, threshold): v >= threshold -> 255 - v. In place.
void solarize_(cv::Mat& rgb, int threshold);
/// timm's solarize_add: v < threshold -> min(255, v + add). In place.
void solarize_add_(cv::Mat& rgb, int add, int threshold = 128);

/// Image.transform(size, AFFINE, (a, b, c, d, e, f), resample, fillcolor): output pixel (x, y) samples the input
/// at (a*(x+.5) + b*(y+.5) + c, d*(x+.5) + e*(y+.5) + f) in Pillow's continuous coordinates; outside -> fill.
/// `interpolation`: cv::INTER_CUBIC | cv::INTER_LINEAR | cv::INTER_NEAREST (Pillow's transform filters).
cv::Mat affine(const cv::Mat& rgb, const std::array<double, 6>& coeffs, int interpolation,
               const std::array<uint8_t, 3>& fill);

/// Image.rotate(degrees, resample, fillcolor=fill): counter-clockwise about the centre, same size.
cv::Mat rotate(const cv::Mat& rgb, double degrees, int interpolation, const std::array<uint8_t, 3>& fill);

}  // namespace beitv2::data::pil
