#include "beitv2/data/dataset.h"

#include <c10/util/StringUtil.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "beitv2/core/config_yaml.h"

namespace beitv2::data {

namespace fs = std::filesystem;

DecodePolicy parse_decode_policy(const std::string& name) {
  if (name == "skip") return DecodePolicy::kSkip;
  if (name == "fail") return DecodePolicy::kFail;
  throw ConfigError("decode policy '" + name + "': expected 'skip' or 'fail'");
}

const char* to_string(DecodePolicy policy) { return policy == DecodePolicy::kSkip ? "skip" : "fail"; }

bool is_image_file(const fs::path& path) {
  static const char* kExt[] = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"};
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return std::any_of(std::begin(kExt), std::end(kExt), [&](const char* e) { return ext == e; });
}

namespace {

std::vector<uint8_t> read_bytes(const fs::path& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw DecodeError(path.string() + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<uint8_t> bytes;
  if (std::fseek(f, 0, SEEK_END) == 0) {
    const long n = std::ftell(f);
    if (n > 0) bytes.resize(static_cast<size_t>(n));
    std::fseek(f, 0, SEEK_SET);
  }
  const size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f);
  const bool err = std::ferror(f) != 0;
  std::fclose(f);
  if (err || got != bytes.size()) throw DecodeError(path.string() + ": read error (is it a regular file?)");
  return bytes;
}

bool is_jpeg(const std::vector<uint8_t>& d) { return d.size() >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF; }

bool is_png(const std::vector<uint8_t>& d) {
  static const uint8_t kSig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  return d.size() >= 8 && std::memcmp(d.data(), kSig, 8) == 0;
}

/// Walks the JPEG marker segments and the entropy-coded data after each SOS; "" if the end-of-image marker is
/// reached, else what is wrong. (Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart
/// marker, so the first other marker ends the scan.)
std::string jpeg_problem(const std::vector<uint8_t>& v) {
  const uint8_t* d = v.data();
  const size_t n = v.size();
  size_t i = 2;
  for (;;) {
    while (i < n && d[i] != 0xFF) ++i;
    while (i < n && d[i] == 0xFF) ++i;
    if (i >= n) return "truncated JPEG (no end-of-image marker)";
    const uint8_t m = d[i++];
    if (m == 0xD9) return "";
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (i + 2 > n) return "truncated JPEG (inside a segment header)";
    const size_t len = (static_cast<size_t>(d[i]) << 8) | d[i + 1];
    if (len < 2) return "corrupt JPEG (bad segment length)";
    i += len;
    if (i > n) return "truncated JPEG (inside a segment)";
    if (m != 0xDA) continue;
    for (;;) {  // entropy-coded data of this scan
      const void* p = i < n ? std::memchr(d + i, 0xFF, n - i) : nullptr;
      if (!p) return "truncated JPEG (image data ends without an end-of-image marker)";
      size_t j = static_cast<size_t>(static_cast<const uint8_t*>(p) - d) + 1;
      while (j < n && d[j] == 0xFF) ++j;
      if (j >= n) return "truncated JPEG (image data ends without an end-of-image marker)";
      if (d[j] == 0x00 || (d[j] >= 0xD0 && d[j] <= 0xD7)) {
        i = j + 1;
        continue;
      }
      i = j - 1;  // the 0xFF before the marker
      break;
    }
  }
}

uint32_t be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}

/// Walks the PNG chunks; "" if IEND is reached inside the file, else what is wrong.
std::string png_problem(const std::vector<uint8_t>& d) {
  size_t i = 8;
  while (i + 12 <= d.size()) {
    const size_t len = be32(&d[i]);
    if (std::memcmp(&d[i + 4], "IEND", 4) == 0) return "";
    i += 12 + len;
  }
  return "truncated PNG (no IEND chunk)";
}

}  // namespace

ImageSize peek_image_size(const std::vector<uint8_t>& v) {
  const uint8_t* d = v.data();
  const size_t n = v.size();
  if (is_png(v)) {
    if (n >= 24 && std::memcmp(d + 12, "IHDR", 4) == 0) {
      return {static_cast<int>(be32(d + 20)), static_cast<int>(be32(d + 16))};
    }
    return {};
  }
  if (!is_jpeg(v)) return {};
  size_t i = 2;
  while (i + 4 <= n) {
    while (i < n && d[i] != 0xFF) ++i;
    while (i < n && d[i] == 0xFF) ++i;
    if (i + 3 > n) break;
    const uint8_t m = d[i++];
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
    if (m == 0xD9 || m == 0xDA) break;
    const size_t len = (static_cast<size_t>(d[i]) << 8) | d[i + 1];
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof && i + 7 <= n) {
      return {(d[i + 3] << 8) | d[i + 4], (d[i + 5] << 8) | d[i + 6]};
    }
    i += len;
  }
  return {};
}

namespace {

void check_pixels(int64_t width, int64_t height, const std::string& name, const DecodeOptions& options) {
  if (options.max_pixels > 0 && width > 0 && height > options.max_pixels / width) {  // w * h > max, no overflow
    throw DecodeError(c10::str(name, ": image too large (", width, "x", height, " pixels, more than the limit of ",
                               options.max_pixels, ")"));
  }
}

}  // namespace

cv::Mat decode_rgb_bytes(const std::vector<uint8_t>& bytes, const std::string& name, const DecodeOptions& options) {
  if (bytes.empty()) throw DecodeError(name + ": empty file");
  std::string problem;
  if (is_jpeg(bytes)) problem = jpeg_problem(bytes);
  if (is_png(bytes)) problem = png_problem(bytes);
  if (!problem.empty()) throw DecodeError(name + ": " + problem);
  // Before decoding: the header's size (a width or height past 2^31 reads as negative: too large too).
  const ImageSize header = peek_image_size(bytes);
  const auto side = [](int v) { return v < 0 ? (int64_t{1} << 32) + v : int64_t{v}; };
  check_pixels(side(header.width), side(header.height), name, options);
  cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<uint8_t*>(bytes.data()));
  // PIL (the reference loader) ignores EXIF orientation; so do we.
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(buf, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    throw DecodeError(name + ": cannot decode image (" + e.msg + ")");
  }
  if (bgr.empty()) throw DecodeError(name + ": cannot decode image (corrupt or unsupported format)");
  check_pixels(bgr.cols, bgr.rows, name, options);  // formats whose header we do not read
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat load_rgb(const fs::path& path, const DecodeOptions& options) {
  return decode_rgb_bytes(read_bytes(path), path.string(), options);
}

// ---- datasets ----

namespace {

std::vector<fs::path> scan_images(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && is_image_file(it->path())) out.push_back(it->path());
  }
  if (ec) throw IoError(dir.string() + ": cannot list (" + ec.message() + ")");
  std::sort(out.begin(), out.end());
  return out;
}

void require_dir(const fs::path& root, const char* what) {
  if (!fs::is_directory(root)) throw IoError(root.string() + ": no such directory (" + what + ")");
}

}  // namespace

ImageDataset ImageDataset::image_folder(const fs::path& root) {
  require_dir(root, "image_folder dataset");
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  }
  if (classes.empty()) {
    throw IoError(root.string() + ": no class folders (an image_folder dataset is root/<class>/<image>)");
  }
  std::sort(classes.begin(), classes.end());
  ImageDataset ds;
  for (size_t c = 0; c < classes.size(); ++c) {
    const auto files = scan_images(root / classes[c]);
    if (files.empty()) throw IoError((root / classes[c]).string() + ": class folder holds no image files");
    for (const auto& f : files) {
      ds.paths_.push_back(f);
      ds.labels_.push_back(static_cast<int64_t>(c));
    }
  }
  ds.classes_ = std::move(classes);
  ds.source_ = "image_folder " + root.string();
  return ds;
}

ImageDataset ImageDataset::folder(const fs::path& root) {
  require_dir(root, "folder dataset");
  ImageDataset ds;
  ds.paths_ = scan_images(root);
  if (ds.paths_.empty()) throw IoError(root.string() + ": no image files (jpg, png, bmp, ppm, pgm, tif, webp) found");
  ds.source_ = "folder " + root.string();
  return ds;
}

ImageDataset ImageDataset::list_file(const fs::path& list) {
  std::ifstream in(list);
  if (!in) throw IoError(list.string() + ": cannot open list file");
  const fs::path base = list.has_parent_path() ? list.parent_path() : fs::path(".");
  ImageDataset ds;
  std::string line;
  int lineno = 0;
  int labelled = -1;  // unknown until the first entry
  std::vector<std::string> missing;
  size_t n_missing = 0;
  int64_t max_label = -1;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    const size_t last = line.find_last_not_of(" \t");
    std::string entry = line.substr(first, last - first + 1);
    // "path label": the last whitespace-separated token is the label if it is an integer.
    int64_t label = -1;
    const size_t sep = entry.find_last_of(" \t");
    if (sep != std::string::npos) {
      const std::string tok = entry.substr(sep + 1);
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(tok.c_str(), &end, 10);
      if (end && *end == '\0' && errno == 0) {
        if (v < 0) throw IoError(c10::str(list.string(), ":", lineno, ": negative label ", v));
        label = v;
        entry.erase(sep);
        entry.erase(entry.find_last_not_of(" \t") + 1);
      }
    }
    const int has = label >= 0 ? 1 : 0;
    if (labelled == -1) labelled = has;
    if (has != labelled) {
      throw IoError(c10::str(list.string(), ":", lineno, ": ", has ? "has a label but earlier lines have none"
                                                                  : "has no label but earlier lines have one",
                             " ('", line, "')"));
    }
    fs::path p(entry);
    if (p.is_relative()) p = base / p;
    if (!fs::is_regular_file(p)) {
      if (missing.size() < 10) missing.push_back(c10::str("  line ", lineno, ": ", p.string()));
      ++n_missing;
    }
    ds.paths_.push_back(std::move(p));
    if (has) {
      ds.labels_.push_back(label);
      max_label = std::max(max_label, label);
    }
  }
  if (n_missing > 0) {
    std::ostringstream os;
    os << list.string() << ": " << n_missing << " of " << ds.paths_.size() << " listed files do not exist:";
    for (const auto& m : missing) os << "\n" << m;
    if (n_missing > missing.size()) os << "\n  ...";
    throw IoError(os.str());
  }
  if (ds.paths_.empty()) throw IoError(list.string() + ": the list names no files");
  for (int64_t c = 0; c <= max_label; ++c) ds.classes_.push_back(std::to_string(c));
  ds.source_ = "list " + list.string();
  return ds;
}

ImageDataset ImageDataset::open(const std::string& kind, const fs::path& where) {
  if (kind == "image_folder") return image_folder(where);
  if (kind == "folder") return folder(where);
  if (kind == "list") return list_file(where);
  throw ConfigError("dataset kind '" + kind + "': expected image_folder, folder or list");
}

std::string ImageDataset::summary() const {
  if (labelled()) return c10::str(size(), " images, ", num_classes(), " classes, ", source_);
  return c10::str(size(), " images (unlabelled), ", source_);
}

}  // namespace beitv2::data
