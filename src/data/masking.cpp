#include "beitv2/data/masking.h"

#include <c10/util/StringUtil.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "beitv2/core/config_yaml.h"

namespace beitv2::data {

void MaskingOptions::validate() const {
  auto bad = [](const std::string& what) { throw ConfigError("masking: " + what); };
  if (height < 1 || width < 1) bad(c10::str("grid must be at least 1x1, got ", height, "x", width));
  if (num_masking_patches < 0 || num_masking_patches > height * width) {
    bad(c10::str("num_masking_patches = ", num_masking_patches, " outside [0, ", height * width, "] for a ", height,
                 "x", width, " grid"));
  }
  if (min_num_patches < 1) bad(c10::str("min_num_patches = ", min_num_patches, " must be >= 1"));
  if (max_num_patches != -1 && max_num_patches < 1) {
    bad(c10::str("max_num_patches = ", max_num_patches, " must be >= 1 (or -1 for num_masking_patches)"));
  }
  if (!(min_aspect > 0)) bad(c10::str("min_aspect = ", min_aspect, " must be > 0"));
  if (max_aspect != -1 && !(max_aspect >= min_aspect)) {
    bad(c10::str("max_aspect = ", max_aspect, " must be >= min_aspect ", min_aspect, " (or -1 for 1/min_aspect)"));
  }
}

std::string MaskingOptions::to_string() const {
  return c10::str("MaskingGenerator(", height, "x", width, ", ", num_masking_patches, " masked, blocks ",
                  min_num_patches, "..", max_num_patches == -1 ? num_masking_patches : max_num_patches,
                  ", aspect ", min_aspect, "..", max_aspect == -1 ? 1.0 / min_aspect : max_aspect, ")");
}

MaskingGenerator::MaskingGenerator(MaskingOptions options) : options_(options) {
  options_.validate();
  const double max_aspect = options_.max_aspect == -1 ? 1.0 / options_.min_aspect : options_.max_aspect;
  log_aspect_min_ = std::log(options_.min_aspect);
  log_aspect_max_ = std::log(max_aspect);
  max_num_patches_ = options_.max_num_patches == -1 ? options_.num_masking_patches : options_.max_num_patches;
}

int64_t MaskingGenerator::add_block(std::vector<uint8_t>& mask, int64_t max_mask_patches, Rng& rng) const {
  const int64_t H = options_.height, W = options_.width;
  int64_t delta = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    // Python's random.uniform(min_num_patches, max_mask_patches): when the budget is below the minimum block
    // this samples in [budget, min] (a + (b - a) * U works either way round).
    const double target_area = rng.uniform(static_cast<double>(options_.min_num_patches),
                                           static_cast<double>(max_mask_patches));
    const double aspect = std::exp(rng.uniform(log_aspect_min_, log_aspect_max_));
    const int64_t h = py_round(std::sqrt(target_area * aspect));
    const int64_t w = py_round(std::sqrt(target_area / aspect));
    if (w < W && h < H) {
      const int64_t top = rng.randint(0, H - h);
      const int64_t left = rng.randint(0, W - w);
      int64_t already = 0;
      for (int64_t i = top; i < top + h; ++i)
        for (int64_t j = left; j < left + w; ++j) already += mask[i * W + j];
      if (0 < h * w - already && h * w - already <= max_mask_patches) {
        for (int64_t i = top; i < top + h; ++i) {
          for (int64_t j = left; j < left + w; ++j) {
            if (mask[i * W + j] == 0) {
              mask[i * W + j] = 1;
              ++delta;
            }
          }
        }
      }
      if (delta > 0) break;
    }
  }
  return delta;
}

std::vector<uint8_t> MaskingGenerator::generate(Rng& rng, MaskingStats* stats) const {
  const int64_t n = num_patches(), target = options_.num_masking_patches;
  std::vector<uint8_t> mask(static_cast<size_t>(n), 0);
  int64_t count = 0, blocks = 0;
  while (count < target) {
    const int64_t budget = std::min(target - count, max_num_patches_);
    const int64_t delta = add_block(mask, budget, rng);
    if (delta == 0) break;
    count += delta;
    ++blocks;
  }
  if (stats) *stats = MaskingStats{blocks, count};
  // Exactly `target` masked: flip a uniformly chosen subset of the surplus (masked) or the shortfall (unmasked)
  // cells, as the official numpy.random.choice(..., replace=False) does.
  if (count != target) {
    const uint8_t from = count > target ? 1 : 0;
    std::vector<int64_t> cells;
    for (int64_t i = 0; i < n; ++i)
      if (mask[i] == from) cells.push_back(i);
    const auto k = static_cast<size_t>(std::llabs(count - target));
    rng.partial_shuffle(cells, k);
    for (size_t i = 0; i < k; ++i) mask[cells[i]] = 1 - from;
  }
  return mask;
}

torch::Tensor MaskingGenerator::operator()(Rng& rng) const {
  const auto m = generate(rng);
  auto out = torch::empty({num_patches()}, torch::kBool);
  std::memcpy(out.data_ptr<bool>(), m.data(), m.size());
  return out;
}

}  // namespace beitv2::data
