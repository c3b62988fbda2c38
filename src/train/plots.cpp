#include "beitv2/train/plots.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "beitv2/core/fs.h"

namespace beitv2 {
namespace {

void write_png(const std::filesystem::path& png, const cv::Mat& bgr) {
  std::vector<uchar> bytes;
  if (!cv::imencode(".png", bgr, bytes)) throw IoError(png.string() + ": PNG encoding failed");
  write_file_atomic(png, std::string(bytes.begin(), bytes.end()));
}

// A stable, well-spread colour per code id (golden-angle hue steps, two brightness levels).
cv::Vec3b code_colour(int64_t id) {
  const int hue = static_cast<int>((id * 137) % 180);
  cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(hue, 200, id % 2 ? 255 : 170));
  cv::Mat bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  return bgr.at<cv::Vec3b>(0, 0);
}

}  // namespace

void plot_codebook_usage(const torch::Tensor& counts, const std::filesystem::path& png, const std::string& title) {
  auto sorted = std::get<0>(counts.to(torch::kCPU, torch::kDouble).sort(0, /*descending=*/true));
  const int64_t n = sorted.numel();
  const int w = 800, h = 300, top = 30, bottom = 20;
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(255, 255, 255));
  const double peak = std::max(1.0, sorted[0].item<double>());
  auto acc = sorted.accessor<double, 1>();
  for (int x = 0; x < w; ++x) {  // one column per pixel: the max count in its code range
    const int64_t a = x * n / w, b = std::max(a + 1, (x + 1) * n / w);
    double v = 0;
    for (int64_t i = a; i < b && i < n; ++i) v = std::max(v, acc[i]);
    const int bar = static_cast<int>((h - top - bottom) * v / peak);
    if (bar > 0) cv::line(img, {x, h - bottom}, {x, h - bottom - bar}, cv::Scalar(180, 110, 30));
  }
  const int64_t used = counts.gt(0).sum().item<int64_t>();
  cv::putText(img, title + "  used " + std::to_string(used) + "/" + std::to_string(n) + " codes, max count " +
                       std::to_string(static_cast<int64_t>(peak)),
              {8, 20}, cv::FONT_HERSHEY_SIMPLEX, 0.5, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  cv::putText(img, "codes sorted by use", {8, h - 5}, cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(90, 90, 90), 1,
              cv::LINE_AA);
  write_png(png, img);
}

void plot_token_maps(const torch::Tensor& images, const torch::Tensor& ids, int64_t grid,
                     const std::filesystem::path& png) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == torch::kUInt8 && ids.size(0) == images.size(0) &&
                  ids.size(1) == grid * grid,
              "plot_token_maps: images ", images.sizes(), " and ids ", ids.sizes(), " for grid ", grid);
  const int cell = 128;
  const int64_t b = images.size(0);
  cv::Mat canvas(static_cast<int>(b) * cell, 2 * cell, CV_8UC3, cv::Scalar(255, 255, 255));
  auto hwc = images.to(torch::kCPU).permute({0, 2, 3, 1}).contiguous();
  auto idc = ids.to(torch::kCPU, torch::kLong).contiguous();
  for (int64_t i = 0; i < b; ++i) {
    cv::Mat rgb(static_cast<int>(hwc.size(1)), static_cast<int>(hwc.size(2)), CV_8UC3, hwc[i].data_ptr<uint8_t>());
    cv::Mat bgr, big;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    cv::resize(bgr, big, {cell, cell}, 0, 0, cv::INTER_NEAREST);
    big.copyTo(canvas(cv::Rect(0, static_cast<int>(i) * cell, cell, cell)));
    cv::Mat map(static_cast<int>(grid), static_cast<int>(grid), CV_8UC3);
    for (int64_t p = 0; p < grid * grid; ++p) {
      map.at<cv::Vec3b>(static_cast<int>(p / grid), static_cast<int>(p % grid)) = code_colour(idc[i][p].item<int64_t>());
    }
    cv::resize(map, big, {cell, cell}, 0, 0, cv::INTER_NEAREST);
    big.copyTo(canvas(cv::Rect(cell, static_cast<int>(i) * cell, cell, cell)));
  }
  write_png(png, canvas);
}

namespace {

// The image (B, 3, S, S) uint8 `i` as a cell x cell BGR picture.
cv::Mat image_cell(const torch::Tensor& hwc, int64_t i, int cell) {
  cv::Mat rgb(static_cast<int>(hwc.size(1)), static_cast<int>(hwc.size(2)), CV_8UC3, hwc[i].data_ptr<uint8_t>());
  cv::Mat bgr, big;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  cv::resize(bgr, big, {cell, cell}, 0, 0, cv::INTER_NEAREST);
  return big;
}

}  // namespace

void plot_mim_predictions(const torch::Tensor& images, const torch::Tensor& mask, const torch::Tensor& correct_1,
                          const torch::Tensor& correct_2, int64_t grid, const std::filesystem::path& png) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == torch::kUInt8 && mask.size(0) == images.size(0) &&
                  mask.size(1) == grid * grid,
              "plot_mim_predictions: images ", images.sizes(), " and mask ", mask.sizes(), " for grid ", grid);
  const int cell = 128;
  const int64_t b = images.size(0);
  const int columns = correct_2.defined() ? 4 : 3;
  cv::Mat canvas(static_cast<int>(b) * cell + 20, columns * cell, CV_8UC3, cv::Scalar(255, 255, 255));
  const char* titles[] = {"image", "mask", "main head", "CLS head"};
  for (int c = 0; c < columns; ++c) {
    cv::putText(canvas, titles[c], {c * cell + 4, 14}, cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(0, 0, 0), 1,
                cv::LINE_AA);
  }
  auto hwc = images.to(torch::kCPU).permute({0, 2, 3, 1}).contiguous();
  auto m = mask.to(torch::kCPU, torch::kBool).contiguous();
  std::vector<torch::Tensor> hits = {correct_1.to(torch::kCPU, torch::kBool)};
  if (correct_2.defined()) hits.push_back(correct_2.to(torch::kCPU, torch::kBool));
  const double patch = static_cast<double>(cell) / static_cast<double>(grid);
  for (int64_t i = 0; i < b; ++i) {
    const int y0 = 20 + static_cast<int>(i) * cell;
    const cv::Mat img = image_cell(hwc, i, cell);
    for (int c = 0; c < columns; ++c) {
      cv::Mat tile = img.clone();
      for (int64_t p = 0; p < grid * grid; ++p) {
        if (!m[i][p].item<bool>()) continue;
        const cv::Rect r(static_cast<int>((p % grid) * patch), static_cast<int>((p / grid) * patch),
                         static_cast<int>(patch + 0.5), static_cast<int>(patch + 0.5));
        cv::Mat roi = tile(r & cv::Rect(0, 0, cell, cell));
        if (c == 1) roi *= 0.25;  // masked: dark
        if (c >= 2) {
          const bool ok = hits[c - 2][i][p].item<bool>();
          cv::Mat colour(roi.size(), roi.type(), ok ? cv::Scalar(60, 200, 60) : cv::Scalar(60, 60, 220));
          cv::addWeighted(roi, 0.35, colour, 0.65, 0, roi);
        }
      }
      if (c > 0) tile.copyTo(canvas(cv::Rect(c * cell, y0, cell, cell)));
      else img.copyTo(canvas(cv::Rect(0, y0, cell, cell)));
    }
  }
  write_png(png, canvas);
}

}  // namespace beitv2
