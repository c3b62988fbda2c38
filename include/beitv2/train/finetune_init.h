#pragma once
// Initialising a classifier (VisionTransformer with a head) from pretrained weights, as the official fine-tuning
// script does (docs/reference.md §5; microsoft/unilm beit2/run_class_finetuning.py, the `--finetune` block):
//
//   source kind   recognised by                         conversion
//   mim           rel_pos_bias.relative_position_bias_  the shared table copied into every block's
//                 table / mask_token / lm_head.*         blocks.N.attn.relative_position_bias_table; mask_token,
//                 (our backbone.safetensors, official    lm_head.*, cls_pt_* and (with mean pooling) norm.* dropped
//                 pretrained files converted)
//   vqkd          encoder.* keys (a VQ-KD tokenizer)    only encoder.* kept, prefix stripped (--model_filter_name)
//   classifier    anything else (ours, official          as is
//                 fine-tuned, timm's beitv2_* layout)
//
// Then for every kind: relative_position_index buffers are dropped (the model's own are kept: rebuilt for its
// grid); tables whose grid differs are resized by the official geometric-progression bicubic interpolation
// (resize_rel_pos_table); pos_embed is resized bicubically when the grid differs; a head whose shape differs is
// dropped (the model's fresh head, scaled by init_scale, stays).
// Divergence: the official load is non-strict and silently leaves any missing key at its init. Here a key the
// model has but the weights lack is an error unless it is one a fine-tuning run expects to start fresh (head.*,
// fc_norm.*, norm.*, index buffers) or `allow_missing` is set; a key of the weights the model has no place for
// is an error unless it is one of the known pretraining-only keys above or `allow_unexpected` is set. So a
// wrong architecture is one clear message instead of a run that trains from scratch by accident.

#include <string>
#include <vector>

#include "beitv2/io/safetensors.h"
#include "beitv2/models/vit.h"

namespace beitv2 {

/// What init_classifier took, dropped and left at its fresh init.
struct InitReport {
  std::string kind;                       ///< mim | vqkd | classifier
  std::vector<std::string> taken;         ///< model tensors filled from the weights
  std::vector<std::string> dropped;       ///< weight tensors not used (after the conversions)
  std::vector<std::string> initialised;   ///< model tensors left at their fresh init (index buffers excluded)
  std::vector<std::string> resized;       ///< "name: [from] -> [to]"
  int64_t expanded_tables = 0;            ///< per-block tables made from the shared one
  /// Several lines: counts, then the dropped / initialised / resized names.
  std::string to_string() const;
};

struct InitOptions {
  std::string kind = "auto";       ///< auto | mim | vqkd | classifier
  bool allow_missing = false;      ///< backbone tensors absent from the weights keep their init (official behaviour)
  bool allow_unexpected = false;   ///< unknown weight tensors are dropped instead of an error
};

/// "mim" | "vqkd" | "classifier" from the names of `weights` (see the table above).
std::string detect_weights_kind(const TensorMap& weights);

/// Converts `weights` for `model` and copies them in. Throws std::runtime_error (one line naming `source` and
/// the first few offending names) on a wrong architecture: shape mismatches, unexpected or missing tensors.
InitReport init_classifier(VisionTransformer& model, const TensorMap& weights, const InitOptions& options = {},
                           const std::string& source = "weights");

/// The official resize of a relative position bias table (R_src, H) -> (R_dst, H) for square windows,
/// R = (2g-1)^2 + 3: the last 3 rows (cls) are kept; the (2g_src-1)^2 grid, placed at the official
/// geometric-progression coordinates (ratio q found by bisection in [1.01, 1.5] so that the src_size/2 spacings
/// sum to dst_size/2), is interpolated at the integer offsets -dst_size/2..dst_size/2 by SciPy
/// interp2d(kind='cubic'), i.e. FITPACK's interpolating bicubic spline (knots at the data points, not-a-knot),
/// evaluated with arguments clamped to the data range. Computed in float64, returned in the input's dtype.
torch::Tensor resize_rel_pos_table(const torch::Tensor& table, int64_t dst_rows);

/// The official source coordinates of that resize (for tests): src_size values, symmetric around 0.
std::vector<double> rel_pos_resize_coordinates(int64_t src_size, int64_t dst_size);

/// The (n_dst x n_src) float64 matrix of 1-D not-a-knot cubic spline interpolation from knots `x` (increasing,
/// n_src >= 4) to points `at` (clamped to [x.front(), x.back()]).
torch::Tensor cubic_spline_matrix(const std::vector<double>& x, const std::vector<double>& at);

/// pos_embed (1, extra + g_src^2, D) -> (1, extra + g_dst^2, D): patch positions resized by bicubic
/// interpolation (align_corners false), the extra (cls) tokens kept.
torch::Tensor resize_pos_embed(const torch::Tensor& pos_embed, int64_t dst_patches);

/// Our names -> timm's beitv2_* layout: the same names without the relative_position_index buffers.
TensorMap to_timm_layout(const TensorMap& state);

}  // namespace beitv2
