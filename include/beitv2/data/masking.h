#pragma once
// Block-wise masking for masked image modelling (docs/reference.md §3.4; official beit2/masking_generator.py).
//
// Rectangles of random area and aspect are masked until the budget is reached, then exactly
// `num_masking_patches` positions are kept by randomly unmasking extra cells (or masking more) at the end.
// BEiT v2 pretraining: a 14x14 grid, 75 masked, blocks of at least 16 patches, aspect in [0.3, 1/0.3].
//
// Divergences: none in the algorithm. Python's `random` and numpy's RNG are replaced by the sample's own Rng, so
// masks agree with the reference in distribution (tests/reference/masking_ref.py; test_data.cpp), not
// draw for draw.

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "beitv2/data/rng.h"

namespace beitv2::data {

/// Settings of the block-wise masking generator (the official constructor's arguments).
///
/// Example (BEiT v2 at 224 with patch 16):
///   MaskingOptions opts;   // 14x14, 75 masked, blocks >= 16 patches, aspect 0.3 .. 3.33
///   MaskingGenerator gen(opts);
struct MaskingOptions {
  int64_t height = 14;               ///< patch rows
  int64_t width = 14;                ///< patch columns
  int64_t num_masking_patches = 75;  ///< masked positions per image, exactly
  int64_t min_num_patches = 16;      ///< smallest block area tried (`--min_mask_patches_per_block`)
  int64_t max_num_patches = -1;      ///< largest block area; -1 = num_masking_patches (the official None)
  double min_aspect = 0.3;           ///< block aspect ratio range [min_aspect, max_aspect]
  double max_aspect = -1;            ///< -1 = 1 / min_aspect (the official None)

  /// Throws ConfigError on a bad grid, count or aspect (names the field and value).
  void validate() const;
  std::string to_string() const;
};

/// What one draw did (for tests and diagnostics).
struct MaskingStats {
  int64_t blocks = 0;       ///< rectangles that added at least one cell
  int64_t masked_by_blocks = 0;  ///< cells masked by the rectangles before the final adjustment
};

/// The block-wise masking generator. Stateless apart from its options: the randomness comes from the Rng
/// passed to each call (per sample: Rng::for_sample(seed, epoch, index, RngStream::kMask)).
class MaskingGenerator {
 public:
  explicit MaskingGenerator(MaskingOptions options);

  /// One mask as (height * width) bytes, row-major, 1 = masked; exactly num_masking_patches ones.
  std::vector<uint8_t> generate(Rng& rng, MaskingStats* stats = nullptr) const;

  /// One mask as a bool tensor of shape (height * width), row-major (the flattened official (H, W) int array).
  torch::Tensor operator()(Rng& rng) const;

  const MaskingOptions& options() const { return options_; }
  int64_t num_patches() const { return options_.height * options_.width; }

 private:
  /// Official `_mask`: up to 10 attempts to add one rectangle; returns the cells newly masked.
  int64_t add_block(std::vector<uint8_t>& mask, int64_t max_mask_patches, Rng& rng) const;

  MaskingOptions options_;
  double log_aspect_min_, log_aspect_max_;
  int64_t max_num_patches_;
};

}  // namespace beitv2::data
