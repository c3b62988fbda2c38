#pragma once
// Helpers shared by the data-layer tests (tests/unit/test_{masking,transforms,dataset,loader}.cpp): Python
// reference runs, a two-sample KS statistic, synthetic images and folders.
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>
#include <thread>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data.h"
#include "common.h"

namespace beitv2::test {

namespace fs = std::filesystem;
using namespace beitv2::data;

/// Any python3 runs the reference algorithms (standard library only); the build env's is preferred.
inline std::string python() {
  for (const char* var : {"BEITV2_BUILD_PYTHON", "BEITV2_PYTHON"}) {
    const char* p = std::getenv(var);
    if (p && fs::exists(p)) return p;
  }
  return "python3";
}

inline nlohmann::json run_reference(const std::string& script, const std::string& args, const fs::path& out) {
  const std::string cmd = python() + " " + (test::source_dir() / "tests" / "reference" / script).string() + " " +
                          args + " --out " + out.string();
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    ADD_FAILURE() << "reference failed (" << rc << "): " << cmd;
    return {};
  }
  std::ifstream f(out);
  return nlohmann::json::parse(f);
}

/// Two-sample Kolmogorov–Smirnov statistic sup |F_a - F_b| (ties handled: both CDFs step at each value).
inline double ks_statistic(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  size_t i = 0, j = 0;
  double d = 0;
  while (i < a.size() && j < b.size()) {
    const double v = std::min(a[i], b[j]);
    while (i < a.size() && a[i] == v) ++i;
    while (j < b.size() && b[j] == v) ++j;
    d = std::max(d, std::fabs(static_cast<double>(i) / a.size() - static_cast<double>(j) / b.size()));
  }
  return d;
}

/// The KS critical value at alpha = 0.001 (c = 1.95); conservative for discrete data.
inline double ks_critical(size_t n, size_t m) { return 1.95 * std::sqrt(static_cast<double>(n + m) / (n * m)); }

inline cv::Mat random_rgb(int h, int w, uint64_t seed) {
  cv::Mat m(h, w, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(m, cv::RNG::UNIFORM, 0, 256);
  cv::GaussianBlur(m, m, cv::Size(3, 3), 0);  // some structure, so colour ops and resizes have work to do
  return m;
}

inline void write_rgb(const fs::path& p, const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imwrite(p.string(), bgr)) << p;
}

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

inline std::string encode(const cv::Mat& rgb, const std::string& ext) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf));
  return std::string(buf.begin(), buf.end());
}

/// An image_folder of `per_class` random PNGs per class (sizes vary), classes "b_cat", "a_dog", "c_eel".
inline fs::path make_image_folder(const fs::path& root, int per_class) {
  const std::vector<std::string> classes{"b_cat", "a_dog", "c_eel"};
  int k = 0;
  for (const auto& c : classes) {
    fs::create_directories(root / c);
    for (int i = 0; i < per_class; ++i, ++k) {
      write_rgb(root / c / ("img" + std::to_string(i) + ".png"), random_rgb(20 + (k * 7) % 23, 18 + (k * 5) % 29, k));
    }
  }
  return root;
}

}  // namespace beitv2::test
