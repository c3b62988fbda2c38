#pragma once
// Shared test helpers: tolerant tensor comparison with an llm.c-style report, fixture paths, temporary folders.

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <sstream>
#include <string>

namespace beitv2::test {

inline std::filesystem::path data_dir() { return BEITV2_TEST_DATA_DIR; }
inline std::filesystem::path source_dir() { return BEITV2_SOURCE_DIR; }
/// The ~90 real photos of Debian's opencv-doc package (installed by scripts/setup.sh).
inline std::filesystem::path photos_dir() { return "/usr/share/doc/opencv-doc/examples/data"; }

/// Fashion-MNIST ImageFolders (tools/prepare_fashion_mnist.py): `per_class` images per class in train/ and val/
/// (val = the official test split, so held out), prepared once per machine in the temp directory.
inline std::filesystem::path fashion_mnist(int per_class) {
  const auto dir = std::filesystem::temp_directory_path() / ("beitv2_fmnist_" + std::to_string(per_class));
  if (!std::filesystem::exists(dir / "val/9_Ankle_boot")) {
    const std::string cmd = "python3 " + (source_dir() / "tools/prepare_fashion_mnist.py").string() + " " +
                            dir.string() + " --limit " + std::to_string(per_class) + " > /dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  return dir;
}

/// The build env's python (torch + safetensors), or "" when there is none.
inline std::string build_python() {
  if (const char* p = std::getenv("BEITV2_BUILD_PYTHON"); p && std::filesystem::exists(p)) return p;
  const char* home = std::getenv("HOME");
  const auto p = std::filesystem::path(home ? home : "") / ".cache/beitv2/build-env/bin/python";
  return std::filesystem::exists(p) ? p.string() : "";
}

/// Fashion-MNIST scenes (tools/prepare_fmnist_scenes.py; the ADE20K layout) made with `options`, prepared once
/// per machine in the temp directory under `name`.
inline std::filesystem::path fmnist_scenes(const std::string& name, const std::string& options) {
  const auto dir = std::filesystem::temp_directory_path() / name;
  if (!std::filesystem::exists(dir / "scenes.json")) {
    const std::string cmd = "python3 " + (source_dir() / "tools/prepare_fmnist_scenes.py").string() + " " +
                            dir.string() + " " + options + " > /dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  return dir;
}

/// 32x32 scenes of 2-4 textured items, 96 training and 16 validation scenes.
inline std::filesystem::path fmnist_scenes_32() {
  return fmnist_scenes("beitv2_fmnist_scenes_32", "--size 32 --train 96 --val 16");
}

/// A fresh, empty folder under the system temporary folder, removed with its contents by the destructor, so a
/// failing ASSERT (which returns from the test) still cleans up. Names are unique per process and object.
///
/// Example: `test::TempDir tmp("datasets"); write_png(tmp.path() / "a.png", img);`
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("beitv2_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  /// path() / name.
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Seeds torch before every test (the SeedingFixture of PyTorch's C++ tests).
class Seeded : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
};

/// |actual - expected| <= atol + rtol * |expected| everywhere. On failure: max abs diff, where, the first
/// values of both, and `hint` (how to regenerate the fixture).
inline ::testing::AssertionResult close(const torch::Tensor& actual, const torch::Tensor& expected, double atol,
                                        double rtol, const std::string& hint = "") {
  if (!actual.sizes().equals(expected.sizes())) {
    std::ostringstream os;
    os << "shape " << actual.sizes() << " vs expected " << expected.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  auto a = actual.detach().to(torch::kCPU, torch::kDouble).flatten();
  auto e = expected.detach().to(torch::kCPU, torch::kDouble).flatten();
  auto diff = (a - e).abs();
  auto bad = diff > (atol + rtol * e.abs());
  if (!bad.any().item<bool>() && a.isfinite().all().item<bool>()) return ::testing::AssertionSuccess();
  const int64_t at = diff.argmax().item<int64_t>();
  std::ostringstream os;
  os << "max |diff| " << diff.max().item<double>() << " at flat index " << at << " (actual "
     << a[at].item<double>() << ", expected " << e[at].item<double>() << "), " << bad.sum().item<int64_t>()
     << " of " << a.numel() << " outside atol " << atol << " + rtol " << rtol << "\n  actual[:5]   "
     << a.slice(0, 0, 5) .reshape({-1}) << "\n  expected[:5] " << e.slice(0, 0, 5).reshape({-1});
  if (!hint.empty()) os << "\n  " << hint;
  return ::testing::AssertionFailure() << os.str();
}

}  // namespace beitv2::test
