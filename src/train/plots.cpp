#include "beitv2/train/plots.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>

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

std::vector<std::filesystem::path> plot_paths(const std::filesystem::path& plots_dir, const std::string& kind,
                                              int64_t epoch, bool final, int64_t eval_every) {
  std::filesystem::create_directories(plots_dir);
  std::vector<std::filesystem::path> out = {plots_dir / (kind + ".png")};
  const int64_t n = (epoch + 1) / std::max<int64_t>(1, eval_every) - 1;  // which evaluation this is
  const bool power_of_two = n > 0 && (n & (n - 1)) == 0;
  if (n == 0 || power_of_two || final) {
    std::filesystem::create_directories(plots_dir / "history");
    out.push_back(plots_dir / "history" / (kind + "_epoch_" + std::to_string(epoch) + ".png"));
  }
  return out;
}

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

void plot_segmentation(const std::vector<torch::Tensor>& images, const std::vector<torch::Tensor>& labels,
                       const std::vector<torch::Tensor>& preds, const std::filesystem::path& png) {
  TORCH_CHECK(!images.empty() && labels.size() == images.size() && preds.size() == images.size(),
              "plot_segmentation: ", images.size(), " images, ", labels.size(), " labels, ", preds.size(), " predictions");
  const int row = 192;
  std::vector<int> widths;
  for (size_t i = 0; i < images.size(); ++i) {
    TORCH_CHECK(images[i].dim() == 3 && images[i].size(0) == 3 && images[i].scalar_type() == torch::kUInt8 &&
                    labels[i].sizes() == images[i].sizes().slice(1) && preds[i].sizes() == labels[i].sizes(),
                "plot_segmentation: image ", i, " ", images[i].sizes(), ", label ", labels[i].sizes(), ", prediction ",
                preds[i].sizes());
    widths.push_back(std::max(1, static_cast<int>(std::lround(row * static_cast<double>(images[i].size(2)) / images[i].size(1)))));
  }
  cv::Mat canvas(static_cast<int>(images.size()) * row, 3 * *std::max_element(widths.begin(), widths.end()), CV_8UC3,
                 cv::Scalar(255, 255, 255));
  for (size_t i = 0; i < images.size(); ++i) {
    const auto hwc = images[i].to(torch::kCPU).permute({1, 2, 0}).contiguous();
    cv::Mat rgb(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3, hwc.data_ptr<uint8_t>()), bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    const int y = static_cast<int>(i) * row, w = widths[i];
    auto place = [&](const cv::Mat& picture, int column) {
      cv::Mat big;
      cv::resize(picture, big, {w, row}, 0, 0, cv::INTER_NEAREST);
      big.copyTo(canvas(cv::Rect(column * w, y, w, row)));
    };
    place(bgr, 0);
    int column = 1;
    for (const auto& map : {labels[i], preds[i]}) {
      const auto ids = map.to(torch::kCPU, torch::kLong).contiguous();
      const auto* id = ids.data_ptr<int64_t>();
      cv::Mat over = bgr.clone();
      for (int r = 0; r < over.rows; ++r) {
        for (int c = 0; c < over.cols; ++c) {
          const int64_t k = id[r * over.cols + c];
          auto& px = over.at<cv::Vec3b>(r, c);
          if (k == 255) {
            px = px * 0.3;
          } else {
            const auto colour = code_colour(k);
            for (int j = 0; j < 3; ++j) px[j] = static_cast<uint8_t>((px[j] + colour[j] + 1) / 2);
          }
        }
      }
      place(over, column++);
    }
  }
  write_png(png, canvas);
}

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

// ---- curves ----

namespace {

const cv::Scalar kBlack(0, 0, 0), kGrey(110, 110, 110), kLight(220, 220, 220);

void text(cv::Mat& img, const std::string& s, cv::Point at, double scale, const cv::Scalar& colour = kBlack) {
  cv::putText(img, s, at, cv::FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv::LINE_AA);
}

int text_width(const std::string& s, double scale) {
  int baseline = 0;
  return cv::getTextSize(s, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &baseline).width;
}

// `s` cut (with "..") to at most `width` pixels.
std::string fit(std::string s, double scale, int width) {
  if (text_width(s, scale) <= width) return s;
  while (!s.empty() && text_width(s + "..", scale) > width) s.pop_back();
  return s + "..";
}

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// One series into the panel whose top-left corner is `at` (kPanelW x kPanelH).
constexpr int kPanelW = 300, kPanelH = 170, kTitleBand = 34;

void draw_panel(cv::Mat& canvas, cv::Point at, const CurveSeries& s) {
  std::vector<std::pair<double, double>> pts;
  for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
    if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) pts.emplace_back(s.x[i], s.y[i]);
  }
  const cv::Rect area(at.x + 64, at.y + 26, kPanelW - 64 - 14, kPanelH - 26 - 24);  // the plot inside the panel
  const bool val = s.name.rfind("val_", 0) == 0;
  const cv::Scalar colour = val ? cv::Scalar(30, 110, 220) : cv::Scalar(180, 110, 30);
  const std::string last = pts.empty() ? "no data" : short_number(pts.back().second);
  text(canvas, fit(s.name, 0.45, kPanelW - 20 - text_width(last, 0.4)), {at.x + 8, at.y + 16}, 0.45);
  text(canvas, last, {at.x + kPanelW - 10 - text_width(last, 0.4), at.y + 16}, 0.4, colour);
  cv::rectangle(canvas, area, kLight);
  if (pts.empty()) return;
  double x0 = pts[0].first, x1 = x0, y0 = pts[0].second, y1 = y0;
  for (const auto& [x, y] : pts) {
    x0 = std::min(x0, x);
    x1 = std::max(x1, x);
    y0 = std::min(y0, y);
    y1 = std::max(y1, y);
  }
  if (x1 <= x0) {  // one step: widen the axis around it
    x0 -= 1;
    x1 += 1;
  }
  if (y1 <= y0) {
    const double d = std::max(std::abs(y0) * 0.05, 1e-9);
    y0 -= d;
    y1 += d;
  }
  auto px = [&](double x, double y) {
    return cv::Point(area.x + static_cast<int>(std::lround((x - x0) / (x1 - x0) * (area.width - 1))),
                     area.y + static_cast<int>(std::lround((y1 - y) / (y1 - y0) * (area.height - 1))));
  };
  std::vector<cv::Point> line;
  for (const auto& [x, y] : pts) line.push_back(px(x, y));
  cv::polylines(canvas, line, /*isClosed=*/false, colour, 1, cv::LINE_AA);
  if (line.size() <= 40) {  // sparse series (evaluations): mark the points
    for (const auto& p : line) cv::circle(canvas, p, 2, colour, cv::FILLED, cv::LINE_AA);
  }
  const std::string ymax = short_number(y1), ymin = short_number(y0), xmax = short_number(x1);
  text(canvas, ymax, {area.x - 4 - text_width(ymax, 0.35), area.y + 8}, 0.35, kGrey);
  text(canvas, ymin, {area.x - 4 - text_width(ymin, 0.35), area.br().y}, 0.35, kGrey);
  text(canvas, short_number(x0), {area.x, area.br().y + 14}, 0.35, kGrey);
  text(canvas, xmax, {area.br().x - text_width(xmax, 0.35), area.br().y + 14}, 0.35, kGrey);
}

}  // namespace

void plot_curves(const std::vector<CurveSeries>& panels, const std::filesystem::path& png, const std::string& title) {
  const int n = static_cast<int>(panels.size());
  const int cols = std::clamp(n, 1, 4), rows = std::max(1, (n + cols - 1) / cols);
  cv::Mat canvas(kTitleBand + rows * kPanelH, cols * kPanelW, CV_8UC3, cv::Scalar(255, 255, 255));
  text(canvas, fit(title, 0.55, canvas.cols - 16), {8, 22}, 0.55);
  if (n == 0) text(canvas, "no metrics yet", {8, kTitleBand + 24}, 0.45, kGrey);
  for (int i = 0; i < n; ++i) draw_panel(canvas, {i % cols * kPanelW, kTitleBand + i / cols * kPanelH}, panels[i]);
  write_png(png, canvas);
}

std::vector<CurveSeries> read_metric_curves(const std::filesystem::path& metrics_jsonl) {
  std::ifstream in(metrics_jsonl);
  if (!in) throw IoError(metrics_jsonl.string() + ": cannot open");
  static const std::set<std::string> skip = {"epoch", "step", "skipped_nonfinite", "skipped_in_window", "min_lr",
                                             "weight_decay"};
  std::vector<std::string> order;
  std::map<std::string, std::map<int64_t, double>> points;  // key -> step -> value
  int64_t last = std::numeric_limits<int64_t>::min();
  for (std::string line; std::getline(in, line);) {
    const auto r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!r.is_object() || !r.contains("step") || !r.at("step").is_number_integer()) continue;
    const auto step = r.at("step").get<int64_t>();
    if (step < last) {  // a resumed run: what the earlier invocation logged from here on is superseded
      for (auto& [k, p] : points) p.erase(p.lower_bound(step), p.end());
    }
    last = step;
    for (const auto& [k, v] : r.items()) {
      if (!v.is_number() || skip.count(k)) continue;
      if (!points.count(k)) order.push_back(k);
      points[k][step] = v.get<double>();
    }
  }
  std::vector<CurveSeries> out;
  for (const auto& k : order) {
    const auto& p = points.at(k);
    if (p.empty()) continue;
    CurveSeries s;
    s.name = k;
    for (const auto& [x, y] : p) {
      s.x.push_back(static_cast<double>(x));
      s.y.push_back(y);
    }
    out.push_back(std::move(s));
  }
  // Losses first, then accuracies, then the rest (lr, grad_norm, ...); evaluation metrics after those, alike.
  auto rank = [](const std::string& k) {
    const bool val = k.rfind("val_", 0) == 0;
    return (val ? 3 : 0) + (k.find("loss") != std::string::npos ? 0 : k.find("acc") != std::string::npos ? 1 : 2);
  };
  std::stable_sort(out.begin(), out.end(), [&](const auto& a, const auto& b) { return rank(a.name) < rank(b.name); });
  return out;
}

void plot_metric_curves(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& png,
                        const std::string& title) {
  plot_curves(read_metric_curves(metrics_jsonl), png, title);
}

// ---- confusion matrix ----

namespace {

constexpr int kNamesBand = 130, kBorder = 10, kConfusionTitle = 30;

}  // namespace

std::pair<int, int> confusion_matrix_size(int64_t classes) {
  const int cell = static_cast<int>(std::clamp<int64_t>(800 / std::max<int64_t>(1, classes), 4, 40));
  const int side = kNamesBand + static_cast<int>(classes) * cell + kBorder;
  return {side, kConfusionTitle + side};
}

void plot_confusion_matrix(const torch::Tensor& counts, const std::vector<std::string>& class_names,
                           const std::filesystem::path& png, const std::string& title) {
  const int64_t c = counts.size(0);
  TORCH_CHECK(counts.dim() == 2 && counts.size(1) == c && static_cast<int64_t>(class_names.size()) == c,
              "plot_confusion_matrix: counts ", counts.sizes(), " for ", class_names.size(), " class names");
  const auto [w, h] = confusion_matrix_size(c);
  const int cell = (w - kNamesBand - kBorder) / static_cast<int>(std::max<int64_t>(1, c));
  const int gx = kNamesBand, gy = kConfusionTitle + kNamesBand;  // the grid's top-left corner
  cv::Mat canvas(h, w, CV_8UC3, cv::Scalar(255, 255, 255));
  text(canvas, fit(title, 0.55, w - 16), {8, 22}, 0.55);
  text(canvas, "true \\ predicted", {8, gy - 8}, 0.4, kGrey);
  auto cpu = counts.to(torch::kCPU, torch::kLong).contiguous();
  auto acc = cpu.accessor<int64_t, 2>();
  const double name_scale = 0.4;
  const bool names = cell >= 10, numbers = cell >= 20;
  for (int64_t i = 0; i < c; ++i) {
    int64_t row = 0;
    for (int64_t j = 0; j < c; ++j) row += acc[i][j];
    const int y = gy + static_cast<int>(i) * cell;
    for (int64_t j = 0; j < c; ++j) {
      const double share = row > 0 ? static_cast<double>(acc[i][j]) / static_cast<double>(row) : 0.0;
      const cv::Scalar shade(255 - share * (255 - 120), 255 - share * (255 - 40), 255 - share * (255 - 10));
      const cv::Rect r(gx + static_cast<int>(j) * cell, y, cell, cell);
      cv::rectangle(canvas, r, shade, cv::FILLED);
      cv::rectangle(canvas, r, kLight);
      const std::string n = std::to_string(acc[i][j]);
      const double scale = cell >= 30 ? 0.4 : 0.3;
      if (numbers && text_width(n, scale) <= cell - 4) {
        text(canvas, n, {r.x + (cell - text_width(n, scale)) / 2, r.y + cell / 2 + 4}, scale,
             share > 0.5 ? cv::Scalar(255, 255, 255) : kBlack);
      }
    }
    if (!names) continue;
    const std::string name = fit(class_names[i], name_scale, kNamesBand - 12);  // left: true class
    text(canvas, name, {gx - 6 - text_width(name, name_scale), y + cell / 2 + 4}, name_scale);
    // top: the predicted class, written bottom to top in a strip rotated a quarter turn
    cv::Mat strip(cell, kNamesBand - 12, CV_8UC3, cv::Scalar(255, 255, 255)), turned;
    text(strip, fit(class_names[i], name_scale, strip.cols - 6), {6, cell / 2 + 4}, name_scale);
    cv::rotate(strip, turned, cv::ROTATE_90_COUNTERCLOCKWISE);
    turned.copyTo(canvas(cv::Rect(gx + static_cast<int>(i) * cell, gy - turned.rows, turned.cols, turned.rows)));
  }
  write_png(png, canvas);
}

}  // namespace beitv2
