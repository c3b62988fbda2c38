#pragma once
// BEiT relative position bias (Bao et al. 2021, §2.6): a learned (num_relative_distance, heads) table,
// num_relative_distance = (2Wh-1)(2Ww-1) + 3, gathered into a (heads, N, N) additive attention-logit bias
// over the cls token plus a Wh x Ww patch grid (N = Wh*Ww + 1).
//
// Index (docs/reference.md §0): patch p=(hi,wi) to patch q=(hj,wj) -> (hi-hj+Wh-1)*(2Ww-1) + (wi-wj+Ww-1);
// row 0 (cls query -> any key) = R-3, column 0 (patch query -> cls key) = R-2, [0,0] = R-1, R = table rows.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace beitv2::nn {

/// (Wh*Ww+1, Wh*Ww+1) int64 index into the bias table, exactly as the official code builds it.
torch::Tensor relative_position_index(int64_t window_h, int64_t window_w);

/// Number of table rows for a window: (2Wh-1)(2Ww-1) + 3.
int64_t num_relative_distance(int64_t window_h, int64_t window_w);

/// table (R, H), index (N, N) -> bias (H, N, N).
torch::Tensor gather_relative_position_bias(const torch::Tensor& table, const torch::Tensor& index);

struct RelativePositionBiasOptions {
  RelativePositionBiasOptions(int64_t window_h, int64_t window_w, int64_t num_heads)
      : window_h_(window_h), window_w_(window_w), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, window_h);
  TORCH_ARG(int64_t, window_w);
  TORCH_ARG(int64_t, num_heads);
};

/// The shared bias of BEiT v2 pretraining: one table used by every block.
/// Example: `RelativePositionBias rpb(RelativePositionBiasOptions(14, 14, 12)); rpb()` -> (12, 197, 197).
class RelativePositionBiasImpl : public torch::nn::Cloneable<RelativePositionBiasImpl> {
 public:
  explicit RelativePositionBiasImpl(const RelativePositionBiasOptions& options);
  void reset() override;
  void pretty_print(std::ostream& os) const override;
  /// -> (H, N, N).
  torch::Tensor forward();

  RelativePositionBiasOptions options;
  torch::Tensor relative_position_bias_table;  // (R, H), zeros at init
  torch::Tensor relative_position_index;       // (N, N) int64 buffer (kept: official checkpoints carry it)
};
TORCH_MODULE(RelativePositionBias);

}  // namespace beitv2::nn
