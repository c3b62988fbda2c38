#pragma once
// Image datasets (lists of files with optional labels) and strict decoding with a skip/fail policy.
//
// Three sources, all checked when opened (before training starts), each error naming the folder, file or line:
//   ImageDataset::image_folder(root)  root/<class>/**/<image>, classes = sorted folder names, label = position
//                                     (torchvision ImageFolder);
//   ImageDataset::folder(root)        every image under root, recursively, unlabelled (label -1);
//   ImageDataset::list_file(file)     one "path [label]" per line; relative paths are resolved against the
//                                     list's folder; '#' comments and blank lines are ignored.
// Image files: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp (case-insensitive; torchvision's list).

#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "beitv2/core/fs.h"

namespace beitv2::data {

/// What the loader does with a file that cannot be decoded (missing, empty, corrupt or truncated):
/// kSkip warns once naming it, counts it and uses another sample; kFail stops with an error naming it.
enum class DecodePolicy { kSkip, kFail };

/// "skip" | "fail"; anything else throws ConfigError.
DecodePolicy parse_decode_policy(const std::string& name);
const char* to_string(DecodePolicy policy);

/// An image file that cannot be decoded; what() starts with the file's path.
class DecodeError : public IoError {
 public:
  using IoError::IoError;
};

/// True for the image extensions datasets pick up (case-insensitive).
bool is_image_file(const std::filesystem::path& path);

/// How image files are decoded.
struct DecodeOptions {
  /// The largest image accepted, in pixels (width x height); 0: no limit. Read from the file header before any
  /// pixel is decoded (JPEG, PNG), else checked after decoding. A 20000x20000 PNG of a few kilobytes would
  /// otherwise take 1.2 GB to decode.
  int64_t max_pixels = 64'000'000;
};

/// Reads and decodes an image file to 3-channel uint8 RGB (grey expanded, alpha dropped), strictly: a missing,
/// empty, truncated (a JPEG whose entropy-coded data ends before the end-of-image marker; a PNG that libpng
/// rejects), undecodable or too large (DecodeOptions::max_pixels) file throws DecodeError("<path>: <reason>").
/// OpenCV alone would return a partly grey image for a truncated JPEG.
cv::Mat load_rgb(const std::filesystem::path& path, const DecodeOptions& options = {});

/// The same from bytes already in memory; `name` labels errors.
cv::Mat decode_rgb_bytes(const std::vector<uint8_t>& bytes, const std::string& name,
                         const DecodeOptions& options = {});

/// Image dimensions from the file header without decoding pixels (JPEG SOF, PNG IHDR); {0, 0} if the format is
/// not one of those two (callers then decode fully).
struct ImageSize {
  int height = 0, width = 0;
};
ImageSize peek_image_size(const std::vector<uint8_t>& bytes);

/// A list of image files with optional integer labels.
class ImageDataset {
 public:
  /// torchvision ImageFolder: root/<class>/... (recursive within each class folder). Throws IoError if root is
  /// missing, has no class folder, or a class folder holds no image.
  static ImageDataset image_folder(const std::filesystem::path& root);

  /// Every image under root, recursively, sorted, unlabelled. Throws IoError if root is missing or holds none.
  static ImageDataset folder(const std::filesystem::path& root);

  /// "path [label]" per line (labels on every line or on none; label >= 0). Throws IoError naming the list and
  /// line for a bad line, and listing (up to 10) files that do not exist.
  static ImageDataset list_file(const std::filesystem::path& list);

  /// By kind name: "image_folder" | "folder" | "list" (ConfigError otherwise).
  static ImageDataset open(const std::string& kind, const std::filesystem::path& where);

  int64_t size() const { return static_cast<int64_t>(paths_.size()); }
  const std::filesystem::path& path(int64_t i) const { return paths_.at(static_cast<size_t>(i)); }
  /// The label of sample i, or -1 for an unlabelled dataset.
  int64_t label(int64_t i) const { return labels_.empty() ? -1 : labels_.at(static_cast<size_t>(i)); }
  bool labelled() const { return !labels_.empty(); }
  /// Class names by label (folder names for image_folder; "0".."K-1" for a labelled list; empty if unlabelled).
  const std::vector<std::string>& class_names() const { return classes_; }
  int64_t num_classes() const { return static_cast<int64_t>(classes_.size()); }
  /// "12000 images, 10 classes, image_folder /data/train" (for logs).
  std::string summary() const;

  /// Decodes sample i (load_rgb with decode_options()).
  cv::Mat load(int64_t i) const { return load_rgb(path(i), decode_); }

  /// How load() decodes (default: DecodeOptions{}).
  const DecodeOptions& decode_options() const { return decode_; }
  void set_decode_options(const DecodeOptions& options) { decode_ = options; }

 private:
  std::vector<std::filesystem::path> paths_;
  std::vector<int64_t> labels_;
  std::vector<std::string> classes_;
  std::string source_;
  DecodeOptions decode_;
};

}  // namespace beitv2::data
