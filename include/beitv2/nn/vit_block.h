#pragma once
// Pre-norm transformer block with optional layer scale (CaiT; BEiT's gamma_1/gamma_2):
//   x += DropPath(gamma_1 * Attn(LN1(x)));  x += DropPath(gamma_2 * MLP(LN2(x)))

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "beitv2/nn/attention.h"
#include "beitv2/nn/drop_path.h"
#include "beitv2/nn/mlp.h"

namespace beitv2::nn {

struct BlockOptions {
  BlockOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(bool, qkv_bias) = true;
  /// Stochastic depth rate of this block.
  TORCH_ARG(double, drop_path) = 0.0;
  /// Layer scale: gamma_1/gamma_2 = init_values * ones(dim) when > 0; absent when 0.
  TORCH_ARG(double, init_values) = 0.0;
  /// Per-block relative position bias window (0 = none).
  TORCH_ARG(int64_t, window_h) = 0;
  TORCH_ARG(int64_t, window_w) = 0;
  TORCH_ARG(Activation, act) = Activation::kGELU;
  TORCH_ARG(double, norm_eps) = 1e-6;
  TORCH_ARG(AttentionBackend, backend) = AttentionBackend::kSdpa;
};

/// Example: `Block b(BlockOptions(768, 12).init_values(0.1)); b(x, shared_bias)`.
class BlockImpl : public torch::nn::Cloneable<BlockImpl> {
 public:
  explicit BlockImpl(const BlockOptions& options);
  void reset() override;
  void pretty_print(std::ostream& os) const override;
  /// x: (B, N, D); shared_bias: undefined or (H, N, N). Returns (B, N, D).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& shared_bias = {});

  BlockOptions options;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  DropPath drop_path{nullptr};
  torch::Tensor gamma_1, gamma_2;  // (D), when init_values > 0
};
TORCH_MODULE(Block);

}  // namespace beitv2::nn
