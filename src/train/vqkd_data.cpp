// The tokenizer trainer's image batches (SPEC.md §2): RandomResizedCrop(size, (min_scale, 1), (3/4, 4/3)) with
// torchvision's sampling + horizontal flip for training; resize(size*256/224) + centre crop for evaluation.
// Every sample's randomness derives from (seed, epoch, index), so batches are identical whatever the number
// of decoding threads and wherever a run resumes.
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <random>
#include <thread>

#include "beitv2/core/config_yaml.h"
#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"
#include "beitv2/data/image.h"
#include "beitv2/train/vqkd_trainer.h"

namespace beitv2 {
namespace {

uint64_t mix(uint64_t a, uint64_t b) {  // splitmix64 of a combined key
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform(std::mt19937_64& rng, double a, double b) {
  return a + (b - a) * (static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0));
}

int64_t randint(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // inclusive
  return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

// torchvision RandomResizedCrop.get_params: (top, left, h, w).
cv::Rect rrc_box(int H, int W, double smin, double smax, std::mt19937_64& rng) {
  const double area = static_cast<double>(H) * W, lr0 = std::log(3.0 / 4.0), lr1 = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform(rng, smin, smax);
    const double aspect = std::exp(uniform(rng, lr0, lr1));
    const int w = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (w > 0 && h > 0 && w <= W && h <= H) {
      const int top = static_cast<int>(randint(rng, 0, H - h)), left = static_cast<int>(randint(rng, 0, W - w));
      return {left, top, w, h};
    }
  }
  const double in_ratio = static_cast<double>(W) / H;
  int w = W, h = H;
  if (in_ratio < 3.0 / 4.0) {
    h = static_cast<int>(std::lround(w / (3.0 / 4.0)));
  } else if (in_ratio > 4.0 / 3.0) {
    w = static_cast<int>(std::lround(h * (4.0 / 3.0)));
  }
  return {(W - w) / 2, (H - h) / 2, w, h};
}

class FolderBatches : public ImageBatches {
 public:
  FolderBatches(const DataConfig& d, const std::string& folder, int64_t size, bool train, int64_t seed, int64_t batch,
                int64_t rank, int64_t world)
      : size_(static_cast<int>(size)), train_(train), seed_(seed), batch_(batch), rank_(rank), world_(world),
        min_scale_(d.min_crop_scale), interp_(data::parse_interpolation(d.interpolation)),
        workers_(std::max<int64_t>(1, d.workers)), fail_(d.decode_errors == "fail") {
    files_ = data::list_images(folder);
    if (train && d.limit > 0 && static_cast<int64_t>(files_.size()) > d.limit) files_.resize(d.limit);
  }

  int64_t size() const override { return static_cast<int64_t>(files_.size()); }

  int64_t batches_per_epoch() const override {
    const int64_t per_rank = size() / world_;
    return train_ ? per_rank / batch_ : (per_rank + batch_ - 1) / batch_;  // drop_last in training only
  }

  void run_epoch(int64_t epoch, int64_t first,
                 const std::function<bool(int64_t, const torch::Tensor&)>& consume) override {
    const auto order = epoch_order(epoch);
    for (int64_t k = first; k < batches_per_epoch(); ++k) {
      const int64_t lo = k * batch_, hi = std::min<int64_t>(lo + batch_, static_cast<int64_t>(order.size()));
      std::vector<cv::Mat> imgs(hi - lo);
      std::atomic<int64_t> next{lo};
      std::exception_ptr error;
      std::mutex error_mu;
      auto work = [&] {
        for (int64_t i; (i = next.fetch_add(1)) < hi;) {
          try {
            imgs[i - lo] = load(order, i, epoch);
          } catch (...) {
            std::lock_guard<std::mutex> lock(error_mu);
            if (!error) error = std::current_exception();
          }
        }
      };
      std::vector<std::thread> pool;
      for (int64_t t = 1; t < std::min<int64_t>(workers_, hi - lo); ++t) pool.emplace_back(work);
      work();
      for (auto& t : pool) t.join();
      if (error) std::rethrow_exception(error);
      if (!consume(k, data::to_uint8_batch(imgs))) return;
    }
  }

 private:
  // Shuffled (training) or sequential order of this rank's shard, equal length on every rank.
  std::vector<int64_t> epoch_order(int64_t epoch) const {
    std::vector<int64_t> all(files_.size());
    std::iota(all.begin(), all.end(), 0);
    if (train_) {
      std::mt19937_64 rng(mix(static_cast<uint64_t>(seed_), static_cast<uint64_t>(epoch)));
      for (int64_t i = static_cast<int64_t>(all.size()) - 1; i > 0; --i) std::swap(all[i], all[randint(rng, 0, i)]);
    }
    const int64_t per_rank = static_cast<int64_t>(all.size()) / world_;
    std::vector<int64_t> mine;
    for (int64_t i = 0; i < per_rank; ++i) mine.push_back(all[i * world_ + rank_]);
    return mine;
  }

  // Decodes and augments position i of the epoch order; an unreadable file is replaced by the next one in the
  // order (policy skip, warned once per file) or is an error (policy fail).
  cv::Mat load(const std::vector<int64_t>& order, int64_t i, int64_t epoch) {
    for (int64_t tries = 0; tries < static_cast<int64_t>(order.size()); ++tries) {
      const int64_t idx = order[(i + tries) % order.size()];
      cv::Mat rgb;
      try {
        rgb = data::decode_rgb(files_[idx]);
      } catch (const IoError& e) {
        if (fail_) throw;
        warn_once(idx, e.what());
        continue;
      }
      if (!train_) return data::resize_center_crop(rgb, size_ * 256 / 224, size_, interp_);
      std::mt19937_64 rng(mix(mix(static_cast<uint64_t>(seed_), static_cast<uint64_t>(epoch)), static_cast<uint64_t>(i)));
      const cv::Rect box = rrc_box(rgb.rows, rgb.cols, min_scale_, 1.0, rng);
      cv::Mat out;
      cv::resize(rgb(box), out, {size_, size_}, 0, 0, interp_);
      if (uniform(rng, 0, 1) < 0.5) cv::flip(out, out, 1);
      return out;
    }
    throw IoError("no readable image left in the dataset");
  }

  void warn_once(int64_t idx, const std::string& what) {
    std::lock_guard<std::mutex> lock(warn_mu_);
    if (warned_.insert(idx).second) log::warn("skipping unreadable image: " + what);
  }

  std::vector<std::filesystem::path> files_;
  int size_;
  bool train_;
  int64_t seed_, batch_, rank_, world_;
  double min_scale_;
  int interp_;
  int64_t workers_;
  bool fail_;
  std::mutex warn_mu_;
  std::set<int64_t> warned_;
};

}  // namespace

std::unique_ptr<ImageBatches> make_vqkd_batches(const DataConfig& data, int64_t size, bool train, int64_t seed,
                                                int64_t batch_size, int64_t rank, int64_t world) {
  const std::string& folder = train ? data.train : data.val;
  try {
    return std::make_unique<FolderBatches>(data, folder, size, train, seed, batch_size, rank, world);
  } catch (const IoError& e) {
    throw ConfigError(std::string(train ? "data.train" : "data.val") + " = " + folder + ": " + e.what());
  }
}

}  // namespace beitv2
