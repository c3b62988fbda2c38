#include "beitv2/data/image.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "beitv2/core/fs.h"
#include "beitv2/data/dataset.h"
#include "beitv2/data/transforms.h"

namespace beitv2::data {

cv::Mat decode_rgb(const std::filesystem::path& path) { return load_rgb(path); }

int parse_interpolation(const std::string& name) {
  if (name == "bicubic") return cv::INTER_CUBIC;
  if (name == "bilinear") return cv::INTER_LINEAR;
  if (name == "lanczos") return cv::INTER_LANCZOS4;
  if (name == "nearest") return cv::INTER_NEAREST;
  throw std::invalid_argument("unknown interpolation '" + name + "' (bicubic, bilinear, lanczos, nearest)");
}

cv::Mat resize_center_crop(const cv::Mat& rgb, int size, int crop, int interpolation) {
  TORCH_CHECK(crop <= size, "resize_center_crop: crop ", crop, " larger than resize ", size);
  return center_crop(resize_shorter(rgb, size, interpolation), crop, crop);
}

torch::Tensor to_uint8_batch(const std::vector<cv::Mat>& images) {
  TORCH_CHECK(!images.empty(), "to_uint8_batch: no images");
  const int h = images[0].rows, w = images[0].cols;
  auto out = torch::empty({static_cast<int64_t>(images.size()), h, w, 3}, torch::kUInt8);
  for (size_t i = 0; i < images.size(); ++i) {
    const cv::Mat& m = images[i];
    TORCH_CHECK(m.type() == CV_8UC3 && m.rows == h && m.cols == w, "to_uint8_batch: image ", i, " is ", m.cols,
                "x", m.rows, " type ", m.type(), ", expected ", w, "x", h, " 8-bit RGB");
    cv::Mat c = m.isContinuous() ? m : m.clone();
    std::memcpy(out[i].data_ptr(), c.data, static_cast<size_t>(h) * w * 3);
  }
  return out.permute({0, 3, 1, 2}).contiguous();  // B, 3, H, W
}

torch::Tensor normalize_images(const torch::Tensor& uint8_batch, const std::array<double, 3>& mean,
                               const std::array<double, 3>& std) {
  TORCH_CHECK(uint8_batch.dim() == 4 && uint8_batch.size(1) == 3, "normalize_images: expected (B, 3, H, W), got ",
              uint8_batch.sizes());
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(uint8_batch.device());
  auto m = torch::tensor({mean[0], mean[1], mean[2]}, opts).view({1, 3, 1, 1});
  auto s = torch::tensor({std[0], std[1], std[2]}, opts).view({1, 3, 1, 1});
  return (uint8_batch.to(torch::kFloat32) / 255.0 - m) / s;
}

std::vector<std::filesystem::path> list_images(const std::filesystem::path& dir) {
  const auto ds = ImageDataset::folder(dir);
  std::vector<std::filesystem::path> out;
  for (int64_t i = 0; i < ds.size(); ++i) out.push_back(ds.path(i));
  return out;
}

}  // namespace beitv2::data
