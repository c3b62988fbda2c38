// Relative position bias (official beit2/modeling_finetune.py, modeling_pretrain.py; timm/models/beit.py).
// docs/reference.md §0.
#include "beitv2/nn/rel_pos_bias.h"

#include <torch/torch.h>

namespace beitv2::nn {

int64_t num_relative_distance(int64_t window_h, int64_t window_w) {
  return (2 * window_h - 1) * (2 * window_w - 1) + 3;
}

torch::Tensor relative_position_index(int64_t window_h, int64_t window_w) {
  TORCH_CHECK(window_h > 0 && window_w > 0, "relative_position_index: window must be positive, got ", window_h,
              "x", window_w);
  const int64_t area = window_h * window_w;
  const int64_t rows = num_relative_distance(window_h, window_w);
  auto coords_h = torch::arange(window_h, torch::kLong).repeat_interleave(window_w);  // (area): row of patch
  auto coords_w = torch::arange(window_w, torch::kLong).repeat({window_h});           // (area): column
  auto dh = coords_h.unsqueeze(1) - coords_h.unsqueeze(0) + (window_h - 1);           // (area, area)
  auto dw = coords_w.unsqueeze(1) - coords_w.unsqueeze(0) + (window_w - 1);
  auto index = torch::zeros({area + 1, area + 1}, torch::kLong);
  index.slice(0, 1).slice(1, 1).copy_(dh * (2 * window_w - 1) + dw);
  index.select(0, 0).fill_(rows - 3);  // cls query -> any key
  index.select(1, 0).fill_(rows - 2);  // patch query -> cls key
  index.index_put_({0, 0}, rows - 1);  // cls -> cls
  return index;
}

torch::Tensor gather_relative_position_bias(const torch::Tensor& table, const torch::Tensor& index) {
  const int64_t n = index.size(0);
  return table.index_select(0, index.reshape({-1})).view({n, n, -1}).permute({2, 0, 1}).contiguous();
}

RelativePositionBiasImpl::RelativePositionBiasImpl(const RelativePositionBiasOptions& options_) : options(options_) {
  reset();
}

void RelativePositionBiasImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.num_heads() > 0, "RelativePositionBias: num_heads must be positive, got ", o.num_heads());
  relative_position_bias_table = register_parameter(
      "relative_position_bias_table",
      torch::zeros({num_relative_distance(o.window_h(), o.window_w()), o.num_heads()}));
  relative_position_index =
      register_buffer("relative_position_index", beitv2::nn::relative_position_index(o.window_h(), o.window_w()));
}

void RelativePositionBiasImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::nn::RelativePositionBias(window=" << options.window_h() << "x" << options.window_w()
     << ", heads=" << options.num_heads() << ")";
}

torch::Tensor RelativePositionBiasImpl::forward() {
  return gather_relative_position_bias(relative_position_bias_table, relative_position_index);
}

}  // namespace beitv2::nn
