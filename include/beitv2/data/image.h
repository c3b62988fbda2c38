#pragma once
// Image decoding (OpenCV) to uint8 RGB, the deterministic eval transform, and batching.
// Images travel as uint8 (B, 3, H, W) and are converted and normalised on the device (normalize_images).

#include <opencv2/core/mat.hpp>
#include <opencv2/imgproc.hpp>  // cv::INTER_* for resize_center_crop
#include <torch/types.h>

#include <array>
#include <filesystem>
#include <string>
#include <vector>

namespace beitv2::data {

/// Decodes an image file to 3-channel uint8 RGB (grey and alpha images converted) as PIL's convert("RGB"):
/// data::load_rgb (truncated files rejected, EXIF orientation ignored). Throws IoError (DecodeError) naming
/// the file if it is missing, unreadable or not an image.
cv::Mat decode_rgb(const std::filesystem::path& path);

/// Interpolation by name: "bicubic" | "bilinear" | "lanczos" | "nearest" (cv::INTER_*).
int parse_interpolation(const std::string& name);

/// torchvision's Resize(size) + CenterCrop(crop) with PIL's resampling (data::resize_shorter + center_crop,
/// pixel-exact to the reference).
cv::Mat resize_center_crop(const cv::Mat& rgb, int size, int crop, int interpolation);

/// HWC uint8 RGB images of equal size -> (B, 3, H, W) uint8 tensor.
torch::Tensor to_uint8_batch(const std::vector<cv::Mat>& images);

/// uint8 (B, 3, H, W) on any device -> float (x/255 - mean)/std.
torch::Tensor normalize_images(const torch::Tensor& uint8_batch, const std::array<double, 3>& mean,
                               const std::array<double, 3>& std);

inline constexpr std::array<double, 3> kImagenetMean{0.485, 0.456, 0.406};
inline constexpr std::array<double, 3> kImagenetStd{0.229, 0.224, 0.225};

/// The image files under `dir`, recursively, sorted (data::ImageDataset::folder). Throws IoError if `dir` is
/// missing or holds no image.
std::vector<std::filesystem::path> list_images(const std::filesystem::path& dir);

}  // namespace beitv2::data
