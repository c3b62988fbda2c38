#pragma once
// Image to patch embedding: Conv2d(in_chans, embed_dim, kernel = stride = patch), flattened row-major.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace beitv2::nn {

struct PatchEmbedOptions {
  PatchEmbedOptions(int64_t img_size, int64_t patch_size, int64_t in_chans, int64_t embed_dim)
      : img_size_(img_size), patch_size_(patch_size), in_chans_(in_chans), embed_dim_(embed_dim) {}
  /// Square input side in pixels; inputs must have exactly this size.
  TORCH_ARG(int64_t, img_size);
  TORCH_ARG(int64_t, patch_size);
  TORCH_ARG(int64_t, in_chans);
  TORCH_ARG(int64_t, embed_dim);
};

/// Example: `PatchEmbed pe(PatchEmbedOptions(224, 16, 3, 768)); pe(x)` with x (B,3,224,224) -> (B,196,768).
/// The VQ-KD decoder uses it with patch 1 over its (B,32,14,14) code map.
class PatchEmbedImpl : public torch::nn::Cloneable<PatchEmbedImpl> {
 public:
  explicit PatchEmbedImpl(const PatchEmbedOptions& options);
  void reset() override;
  void pretty_print(std::ostream& os) const override;
  /// x: (B, in_chans, img, img) -> (B, N, embed_dim), N = grid², tokens in raster (row, col) order.
  torch::Tensor forward(const torch::Tensor& x);

  int64_t grid_size() const { return options.img_size() / options.patch_size(); }
  int64_t num_patches() const { return grid_size() * grid_size(); }

  PatchEmbedOptions options;
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

}  // namespace beitv2::nn
