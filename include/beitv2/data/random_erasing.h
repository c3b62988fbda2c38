#pragma once
// Random erasing for fine-tuning (timm/data/random_erasing.py; docs/reference.md §5: p 0.25, mode 'pixel', count 1).
//
// It runs AFTER normalisation, so it works on the normalised float batch on the device, once per batch:
//   x = normalize_images(batch.images[0].to(device), mean, std);
//   erasing.apply_(x, seed, epoch, batch.indices);
// Per image, with probability p: up to 10 tries of area ~ U(min_area, max_area) * H * W / count and
// aspect = exp(U(log min_aspect, log max_aspect)), h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)),
// accepted if w < W and h < H; the box (all channels) is filled with N(0, 1) per pixel ('pixel'), one N(0, 1)
// per channel ('rand') or 0 ('const'). Each image's draws come from its own Rng (seed, epoch, index, kErasing),
// and its noise from a CPU generator seeded by that Rng, so results do not depend on batch composition.

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace beitv2::data {

/// Example: RandomErasingOptions opts;   // p 0.25, pixel mode, 1 box (the BEiT v2 fine-tuning recipe)
struct RandomErasingOptions {
  double probability = 0.25;
  double min_area = 0.02;
  double max_area = 1.0 / 3.0;
  double min_aspect = 0.3;
  double max_aspect = -1;     ///< -1 = 1 / min_aspect
  std::string mode = "pixel"; ///< "pixel" | "rand" | "const"
  int64_t min_count = 1;
  int64_t max_count = 1;      ///< boxes per image ~ randint[min_count, max_count]

  /// Throws ConfigError naming the bad field.
  void validate() const;
};

class RandomErasing {
 public:
  explicit RandomErasing(RandomErasingOptions options = {});

  /// Erases in place. `x`: normalised float (B, C, H, W) on any device; `indices`: int64 (B) sample indices
  /// (Batch::indices) that, with (seed, epoch), seed each image's randomness.
  void apply_(torch::Tensor& x, uint64_t seed, int64_t epoch, const torch::Tensor& indices) const;

  const RandomErasingOptions& options() const { return options_; }

 private:
  RandomErasingOptions options_;
};

}  // namespace beitv2::data
