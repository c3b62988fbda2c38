// Implements data/pil_ops.h, data/transforms.h, data/rand_augment.h and data/random_erasing.h (one translation
// unit: each one that sees the torch headers costs ~10 s to compile on the 2-core machines).
#include "beitv2/data/transforms.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/StringUtil.h>
#include <opencv2/core.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <regex>
#include <vector>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/pil_ops.h"
#include "beitv2/data/rand_augment.h"
#include "beitv2/data/random_erasing.h"

namespace beitv2::data {

// ============================================================================================================
// Pillow-compatible operations
// ============================================================================================================
namespace pil {
namespace {

void check_rgb(const cv::Mat& m, const char* fn) {
  TORCH_CHECK(m.type() == CV_8UC3, fn, ": expected an 8-bit 3-channel image, got type ", m.type(), " (",
              m.cols, "x", m.rows, ")");
  TORCH_CHECK(m.rows > 0 && m.cols > 0, fn, ": empty image");
}

// ---- Image.resize (Pillow libImaging/Resample.c) ----------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  // Truncated sinc: Lanczos with a = 3.
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct ResampleFilter {
  double (*fn)(double);
  double support;
};

ResampleFilter resample_filter(int interpolation) {
  switch (interpolation) {
    case cv::INTER_LINEAR: return {bilinear_filter, 1.0};
    case cv::INTER_CUBIC: return {bicubic_filter, 2.0};
    case cv::INTER_LANCZOS4: return {lanczos_filter, 3.0};
    default: break;
  }
  TORCH_CHECK(false, "resample: unsupported interpolation code ", interpolation,
              " (cv::INTER_CUBIC, INTER_LINEAR, INTER_LANCZOS4 or INTER_NEAREST)");
}

/// Per output position: first input index, number of taps and `ksize` fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;
};

Coeffs precompute_coeffs(int in_size, int out_size, const ResampleFilter& filter) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = filter.support * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // C cast: truncation toward zero, as Pillow
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = filter.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      // normalize_coeffs_8bpc: round half away from zero to 22-bit fixed point.
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift (C++20): floor division, as Pillow's lookup table
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/// Horizontal pass over input rows [y0, y0 + dst.rows) (Pillow's ImagingResampleHorizontal_8bpc).
void resample_horizontal(const cv::Mat& src, int y0, const Coeffs& c, cv::Mat& dst) {
  const int out_w = dst.cols;
  for (int yy = 0; yy < dst.rows; ++yy) {
    const uint8_t* in = src.ptr<uint8_t>(y0 + yy);
    uint8_t* out = dst.ptr<uint8_t>(yy);
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* p = in + 3 * c.first[xx];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0, n = c.count[xx]; x < n; ++x) {
        s0 += p[3 * x] * k[x];
        s1 += p[3 * x + 1] * k[x];
        s2 += p[3 * x + 2] * k[x];
      }
      out[3 * xx] = clip8(s0);
      out[3 * xx + 1] = clip8(s1);
      out[3 * xx + 2] = clip8(s2);
    }
  }
}

/// Vertical pass; `src` row r holds input row r + y0 (Pillow's ImagingResampleVertical_8bpc). Integer sums are
/// order-independent, so taps run in the outer loop and the row in the inner, vectorisable one.
void resample_vertical(const cv::Mat& src, int y0, const Coeffs& c, cv::Mat& dst) {
  const int n = dst.cols * 3;
  std::vector<int32_t> acc(n);
  for (int yy = 0; yy < dst.rows; ++yy) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    for (int y = 0; y < c.count[yy]; ++y) {
      const uint8_t* in = src.ptr<uint8_t>(c.first[yy] + y - y0);
      const int32_t ky = k[y];
      int32_t* a = acc.data();
      for (int i = 0; i < n; ++i) a[i] += in[i] * ky;
    }
    uint8_t* out = dst.ptr<uint8_t>(yy);
    for (int i = 0; i < n; ++i) out[i] = clip8(acc[i]);
  }
}

// ---- Image.transform (Pillow libImaging/Geometry.c) -------------------------------------------------------

inline int clip_index(int v, int size) { return v < 0 ? 0 : (v >= size ? size - 1 : v); }

inline double cubic_pil(double v1, double v2, double v3, double v4, double d) {
  // Geometry.c BICUBIC (a = -1 cubic convolution through v2, v3).
  const double p1 = v2;
  const double p2 = -v1 + v3;
  const double p3 = 2 * (v1 - v2) + v3 - v4;
  const double p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

/// Samples `im` at Pillow continuous coordinates; false when outside (the pixel keeps the fill colour).
bool sample_bicubic(const cv::Mat& im, double xin, double yin, uint8_t* out) {
  if (xin < 0.0 || xin >= im.cols || yin < 0.0 || yin >= im.rows) return false;
  xin -= 0.5;
  yin -= 0.5;
  int x = static_cast<int>(std::floor(xin));
  int y = static_cast<int>(std::floor(yin));
  const double dx = xin - x, dy = yin - y;
  --x;
  --y;
  int xs[4];
  for (int i = 0; i < 4; ++i) xs[i] = 3 * clip_index(x + i, im.cols);
  for (int b = 0; b < 3; ++b) {
    double v[4];
    const uint8_t* row = im.ptr<uint8_t>(clip_index(y, im.rows)) + b;
    v[0] = cubic_pil(row[xs[0]], row[xs[1]], row[xs[2]], row[xs[3]], dx);
    for (int r = 1; r < 4; ++r) {
      if (y + r >= 0 && y + r < im.rows) {
        row = im.ptr<uint8_t>(y + r) + b;
        v[r] = cubic_pil(row[xs[0]], row[xs[1]], row[xs[2]], row[xs[3]], dx);
      } else {
        v[r] = v[r - 1];
      }
    }
    const double o = cubic_pil(v[0], v[1], v[2], v[3], dy);
    out[b] = o <= 0.0 ? 0 : (o >= 255.0 ? 255 : static_cast<uint8_t>(o));
  }
  return true;
}

bool sample_bilinear(const cv::Mat& im, double xin, double yin, uint8_t* out) {
  if (xin < 0.0 || xin >= im.cols || yin < 0.0 || yin >= im.rows) return false;
  xin -= 0.5;
  yin -= 0.5;
  const int x = static_cast<int>(std::floor(xin));
  const int y = static_cast<int>(std::floor(yin));
  const double dx = xin - x, dy = yin - y;
  const int x0 = 3 * clip_index(x, im.cols), x1 = 3 * clip_index(x + 1, im.cols);
  for (int b = 0; b < 3; ++b) {
    const uint8_t* row = im.ptr<uint8_t>(clip_index(y, im.rows)) + b;
    const double v1 = row[x0] + (row[x1] - row[x0]) * dx;
    double v2 = v1;
    if (y + 1 >= 0 && y + 1 < im.rows) {
      row = im.ptr<uint8_t>(y + 1) + b;
      v2 = row[x0] + (row[x1] - row[x0]) * dx;
    }
    out[b] = static_cast<uint8_t>(v1 + (v2 - v1) * dy);
  }
  return true;
}

bool sample_nearest(const cv::Mat& im, double xin, double yin, uint8_t* out) {
  const int x = xin < 0.0 ? -1 : static_cast<int>(xin);
  const int y = yin < 0.0 ? -1 : static_cast<int>(yin);
  if (x < 0 || x >= im.cols || y < 0 || y >= im.rows) return false;
  std::memcpy(out, im.ptr<uint8_t>(y) + 3 * x, 3);
  return true;
}

/// Applies a 256-entry table per channel in place.
void apply_luts_(cv::Mat& rgb, const std::array<std::array<uint8_t, 256>, 3>& lut) {
  for (int y = 0; y < rgb.rows; ++y) {
    uint8_t* p = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x, p += 3) {
      p[0] = lut[0][p[0]];
      p[1] = lut[1][p[1]];
      p[2] = lut[2][p[2]];
    }
  }
}

void apply_lut_(cv::Mat& rgb, const std::array<uint8_t, 256>& lut) { apply_luts_(rgb, {lut, lut, lut}); }

std::array<std::array<int64_t, 256>, 3> histograms(const cv::Mat& rgb) {
  std::array<std::array<int64_t, 256>, 3> h{};
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* p = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x, p += 3) {
      ++h[0][p[0]];
      ++h[1][p[1]];
      ++h[2][p[2]];
    }
  }
  return h;
}

/// Image.blend(a, b, alpha) value for one byte pair.
inline uint8_t blend_value(int a, int b, float alpha) {
  const float t = static_cast<float>(a) + alpha * static_cast<float>(b - a);
  return t <= 0.0f ? 0 : (t >= 255.0f ? 255 : static_cast<uint8_t>(t));
}

/// Blend with a constant image (value `c` in every channel): a table per source value.
void blend_constant_(cv::Mat& rgb, int c, double factor) {
  const auto alpha = static_cast<float>(factor);
  std::array<uint8_t, 256> lut;
  for (int v = 0; v < 256; ++v) lut[v] = blend_value(c, v, alpha);
  apply_lut_(rgb, lut);
}

}  // namespace

cv::Mat resample(const cv::Mat& src, int height, int width, int interpolation) {
  check_rgb(src, "resample");
  TORCH_CHECK(height > 0 && width > 0, "resample: output size ", width, "x", height, " must be positive");
  if (src.rows == height && src.cols == width) return src.clone();  // Image.resize returns a copy
  cv::Mat out(height, width, CV_8UC3);
  if (interpolation == cv::INTER_NEAREST) {
    // Image.resize(NEAREST) = Geometry.c ImagingScaleAffine: source positions accumulated in double from
    // 0.5 * scale in steps of scale (in / out), truncated.
    const double sx = static_cast<double>(src.cols) / width, sy = static_cast<double>(src.rows) / height;
    std::vector<int> xs(width), ys(height);
    double xo = 0.5 * sx, yo = 0.5 * sy;
    for (int x = 0; x < width; ++x, xo += sx) xs[x] = 3 * std::min(static_cast<int>(xo), src.cols - 1);
    for (int y = 0; y < height; ++y, yo += sy) ys[y] = std::min(static_cast<int>(yo), src.rows - 1);
    for (int y = 0; y < height; ++y) {
      const uint8_t* in = src.ptr<uint8_t>(ys[y]);
      uint8_t* o = out.ptr<uint8_t>(y);
      for (int x = 0; x < width; ++x) std::memcpy(o + 3 * x, in + xs[x], 3);
    }
    return out;
  }
  const ResampleFilter filter = resample_filter(interpolation);
  const bool need_h = width != src.cols, need_v = height != src.rows;
  const Coeffs cv_ = precompute_coeffs(src.rows, height, filter);
  if (!need_h) {
    resample_vertical(src, 0, cv_, out);
    return out;
  }
  const Coeffs ch = precompute_coeffs(src.cols, width, filter);
  if (!need_v) {
    resample_horizontal(src, 0, ch, out);
    return out;
  }
  // Both passes round to 8 bits in between, so their order matters. Pillow 13 (the reference environment's)
  // runs the vertical pass first when the image shrinks vertically by more than twice the horizontal shrink
  // (in_h - out_h > 2 * (in_w - out_w)), else horizontal first (Pillow < 10 always went horizontal first; the
  // two orders differ by at most 1 on some pixels). Rule measured against Pillow 13.0.0 on ~400 size pairs,
  // boundaries included; test_data_reference.cpp checks both orders.
  if (height < src.rows && src.rows - height > 2 * (src.cols - width)) {
    cv::Mat tmp(height, src.cols, CV_8UC3);
    resample_vertical(src, 0, cv_, tmp);
    resample_horizontal(tmp, 0, ch, out);
    return out;
  }
  const int y_first = cv_.first.front();
  const int y_last = cv_.first.back() + cv_.count.back();
  cv::Mat tmp(y_last - y_first, width, CV_8UC3);
  resample_horizontal(src, y_first, ch, tmp);
  resample_vertical(tmp, y_first, cv_, out);
  return out;
}

cv::Mat blend(const cv::Mat& a, const cv::Mat& b, double alpha) {
  check_rgb(a, "blend");
  TORCH_CHECK(b.type() == a.type() && b.size() == a.size(), "blend: images differ in size or type");
  const auto al = static_cast<float>(alpha);
  cv::Mat out(a.rows, a.cols, CV_8UC3);
  for (int y = 0; y < a.rows; ++y) {
    const uint8_t* pa = a.ptr<uint8_t>(y);
    const uint8_t* pb = b.ptr<uint8_t>(y);
    uint8_t* po = out.ptr<uint8_t>(y);
    for (int i = 0; i < 3 * a.cols; ++i) po[i] = blend_value(pa[i], pb[i], al);
  }
  return out;
}

cv::Mat to_grey(const cv::Mat& rgb) {
  check_rgb(rgb, "to_grey");
  cv::Mat out(rgb.rows, rgb.cols, CV_8UC1);
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* p = rgb.ptr<uint8_t>(y);
    uint8_t* o = out.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x, p += 3) {
      o[x] = static_cast<uint8_t>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
    }
  }
  return out;
}

void enhance_brightness_(cv::Mat& rgb, double factor) {
  check_rgb(rgb, "enhance_brightness");
  blend_constant_(rgb, 0, factor);
}

void enhance_contrast_(cv::Mat& rgb, double factor) {
  check_rgb(rgb, "enhance_contrast");
  const cv::Mat grey = to_grey(rgb);
  int64_t sum = 0;
  for (int y = 0; y < grey.rows; ++y) {
    const uint8_t* p = grey.ptr<uint8_t>(y);
    for (int x = 0; x < grey.cols; ++x) sum += p[x];
  }
  // ImageStat mean (a double) + 0.5, truncated.
  const int mean = static_cast<int>(static_cast<double>(sum) / (static_cast<double>(grey.rows) * grey.cols) + 0.5);
  blend_constant_(rgb, mean, factor);
}

void enhance_color_(cv::Mat& rgb, double factor) {
  check_rgb(rgb, "enhance_color");
  const auto alpha = static_cast<float>(factor);
  for (int y = 0; y < rgb.rows; ++y) {
    uint8_t* p = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x, p += 3) {
      const int l = (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16;
      p[0] = blend_value(l, p[0], alpha);
      p[1] = blend_value(l, p[1], alpha);
      p[2] = blend_value(l, p[2], alpha);
    }
  }
}

void enhance_sharpness_(cv::Mat& rgb, double factor) {
  check_rgb(rgb, "enhance_sharpness");
  // ImageFilter.SMOOTH: float32 kernel / 13, rounded (+0.5, truncated) and clipped; border pixels copied.
  cv::Mat smooth = rgb.clone();
  const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
  for (int y = 1; y + 1 < rgb.rows; ++y) {
    const uint8_t* up = rgb.ptr<uint8_t>(y - 1);
    const uint8_t* mid = rgb.ptr<uint8_t>(y);
    const uint8_t* down = rgb.ptr<uint8_t>(y + 1);
    uint8_t* o = smooth.ptr<uint8_t>(y);
    for (int i = 3; i < 3 * (rgb.cols - 1); ++i) {
      // Pillow sums the row below first, then the row itself, then the row above, each left to right.
      const float s = (down[i - 3] * k1 + down[i] * k1 + down[i + 3] * k1) +
                      (mid[i - 3] * k1 + mid[i] * k5 + mid[i + 3] * k1) +
                      (up[i - 3] * k1 + up[i] * k1 + up[i + 3] * k1);
      const float r = s + 0.5f;
      o[i] = r <= 0.0f ? 0 : (r >= 255.0f ? 255 : static_cast<uint8_t>(r));
    }
  }
  rgb = blend(smooth, rgb, factor);
}

void autocontrast_(cv::Mat& rgb) {
  check_rgb(rgb, "autocontrast");
  const auto h = histograms(rgb);
  std::array<std::array<uint8_t, 256>, 3> lut;
  for (int c = 0; c < 3; ++c) {
    int lo = 0, hi = 255;
    while (lo < 256 && h[c][lo] == 0) ++lo;
    while (hi >= 0 && h[c][hi] == 0) --hi;
    if (hi <= lo) {
      std::iota(lut[c].begin(), lut[c].end(), 0);
      continue;
    }
    const double scale = 255.0 / (hi - lo);
    const double offset = -lo * scale;
    for (int v = 0; v < 256; ++v) {
      const int ix = static_cast<int>(v * scale + offset);  // Python int(): truncation toward zero
      lut[c][v] = static_cast<uint8_t>(std::clamp(ix, 0, 255));
    }
  }
  apply_luts_(rgb, lut);
}

void equalize_(cv::Mat& rgb) {
  check_rgb(rgb, "equalize");
  const auto h = histograms(rgb);
  std::array<std::array<uint8_t, 256>, 3> lut;
  for (int c = 0; c < 3; ++c) {
    int64_t total = 0, last = 0, nonzero = 0;
    for (int v = 0; v < 256; ++v) {
      if (h[c][v]) {
        total += h[c][v];
        last = h[c][v];
        ++nonzero;
      }
    }
    const int64_t step = nonzero <= 1 ? 0 : (total - last) / 255;
    if (step == 0) {
      std::iota(lut[c].begin(), lut[c].end(), 0);
      continue;
    }
    int64_t n = step / 2;
    for (int v = 0; v < 256; ++v) {
      lut[c][v] = static_cast<uint8_t>(std::min<int64_t>(n / step, 255));
      n += h[c][v];
    }
  }
  apply_luts_(rgb, lut);
}

void invert_(cv::Mat& rgb) {
  check_rgb(rgb, "invert");
  std::array<uint8_t, 256> lut;
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(255 - v);
  apply_lut_(rgb, lut);
}

void posterize_(cv::Mat& rgb, int bits) {
  check_rgb(rgb, "posterize");
  if (bits >= 8) return;
  const int mask = bits <= 0 ? 0 : ~((1 << (8 - bits)) - 1);
  std::array<uint8_t, 256> lut;
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(v & mask);
  apply_lut_(rgb, lut);
}

void solarize_(cv::Mat& rgb, int threshold) {
  check_rgb(rgb, "solarize");
  std::array<uint8_t, 256> lut;
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(v < threshold ? v : 255 - v);
  apply_lut_(rgb, lut);
}

void solarize_add_(cv::Mat& rgb, int add, int threshold) {
  check_rgb(rgb, "solarize_add");
  std::array<uint8_t, 256> lut;
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(v < threshold ? std::min(255, v + add) : v);
  apply_lut_(rgb, lut);
}

cv::Mat affine(const cv::Mat& rgb, const std::array<double, 6>& a, int interpolation,
               const std::array<uint8_t, 3>& fill) {
  check_rgb(rgb, "affine");
  bool (*sample)(const cv::Mat&, double, double, uint8_t*) = nullptr;
  switch (interpolation) {
    case cv::INTER_CUBIC: sample = sample_bicubic; break;
    case cv::INTER_LINEAR: sample = sample_bilinear; break;
    case cv::INTER_NEAREST: sample = sample_nearest; break;
    default: TORCH_CHECK(false, "affine: unsupported interpolation code ", interpolation, " (cubic, linear, nearest)");
  }
  cv::Mat out(rgb.rows, rgb.cols, CV_8UC3);
  for (int y = 0; y < out.rows; ++y) {
    uint8_t* o = out.ptr<uint8_t>(y);
    for (int x = 0; x < out.cols; ++x, o += 3) {
      const double xin = a[0] * (x + 0.5) + a[1] * (y + 0.5) + a[2];
      const double yin = a[3] * (x + 0.5) + a[4] * (y + 0.5) + a[5];
      if (!sample(rgb, xin, yin, o)) std::memcpy(o, fill.data(), 3);
    }
  }
  return out;
}

cv::Mat rotate(const cv::Mat& rgb, double degrees, int interpolation, const std::array<uint8_t, 3>& fill) {
  // Image.rotate without expand: the inverse rotation about the centre (w/2, h/2), matrix entries rounded to
  // 15 decimals as Pillow does. (Pillow's fast paths for 0/90/180/270 degrees give the same pixels.)
  const double w = rgb.cols, h = rgb.rows;
  const double angle = -degrees * M_PI / 180.0;
  auto r15 = [](double v) { return std::round(v * 1e15) / 1e15; };
  std::array<double, 6> m{r15(std::cos(angle)), r15(std::sin(angle)), 0.0,
                          r15(-std::sin(angle)), r15(std::cos(angle)), 0.0};
  const double cx = w / 2.0, cy = h / 2.0;
  m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
  m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
  return affine(rgb, m, interpolation, fill);
}

}  // namespace pil

// ============================================================================================================
// Transforms
// ============================================================================================================

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
}

cv::Mat EvalTransform::operator()(const cv::Mat& rgb) const {
  return center_crop(resize_shorter(rgb, resize_size(), interpolation), crop, crop);
}

// ============================================================================================================
// RandAugment (timm)
// ============================================================================================================

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

// ============================================================================================================
// RandomErasing (timm)
// ============================================================================================================

void RandomErasingOptions::validate() const {
  check_prob("random_erasing.probability", probability);
  if (!(min_area > 0 && min_area <= max_area && max_area <= 1)) {
    throw ConfigError(
        c10::str("random_erasing area = [", min_area, ", ", max_area, "] must satisfy 0 < min <= max <= 1"));
  }
  if (!(min_aspect > 0)) throw ConfigError(c10::str("random_erasing.min_aspect = ", min_aspect, " must be > 0"));
  if (mode != "pixel" && mode != "rand" && mode != "const") {
    throw ConfigError("random_erasing.mode = '" + mode + "' (pixel, rand or const)");
  }
  if (!(min_count >= 1 && max_count >= min_count)) {
    throw ConfigError(
        c10::str("random_erasing count = [", min_count, ", ", max_count, "] must satisfy 1 <= min <= max"));
  }
}

RandomErasing::RandomErasing(RandomErasingOptions options) : options_(std::move(options)) { options_.validate(); }

void RandomErasing::apply_(torch::Tensor& x, uint64_t seed, int64_t epoch, const torch::Tensor& indices) const {
  TORCH_CHECK(x.dim() == 4 && x.is_floating_point(), "RandomErasing: expected a float (B, C, H, W) batch, got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(indices.dim() == 1 && indices.size(0) == x.size(0), "RandomErasing: indices ", indices.sizes(),
              " do not match the batch of ", x.size(0));
  const auto& o = options_;
  const auto idx = indices.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const double max_aspect = o.max_aspect == -1 ? 1.0 / o.min_aspect : o.max_aspect;
  const double la0 = std::log(o.min_aspect), la1 = std::log(max_aspect);
  for (int64_t b = 0; b < x.size(0); ++b) {
    Rng rng = Rng::for_sample(seed, epoch, idx.data_ptr<int64_t>()[b], RngStream::kErasing);
    if (rng.uniform() > o.probability) continue;
    const int64_t count = o.min_count == o.max_count ? o.min_count : rng.randint(o.min_count, o.max_count);
    for (int64_t c = 0; c < count; ++c) {
      for (int attempt = 0; attempt < 10; ++attempt) {
        const double target_area = rng.uniform(o.min_area, o.max_area) * static_cast<double>(H * W) / count;
        const double aspect = std::exp(rng.uniform(la0, la1));
        const int64_t h = py_round(std::sqrt(target_area * aspect));
        const int64_t w = py_round(std::sqrt(target_area / aspect));
        if (w < W && h < H) {
          const int64_t top = rng.randint(0, H - h), left = rng.randint(0, W - w);
          auto gen = at::detail::createCPUGenerator(rng.next());
          torch::Tensor fill;
          if (o.mode == "pixel") {
            fill = torch::randn({C, h, w}, gen, torch::kFloat32);
          } else if (o.mode == "rand") {
            fill = torch::randn({C, 1, 1}, gen, torch::kFloat32);
          } else {
            fill = torch::zeros({C, 1, 1}, torch::kFloat32);
          }
          x[b].slice(1, top, top + h).slice(2, left, left + w).copy_(fill.to(x.device(), x.scalar_type()));
          break;
        }
      }
    }
  }
}

}  // namespace beitv2::data
