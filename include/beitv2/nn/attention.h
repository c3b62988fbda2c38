#pragma once
// Multi-head self-attention of BEiT (official beit2/modeling_finetune.py `Attention`):
// qkv = Linear(D, 3D, bias=False) plus separate q_bias and v_bias (k has no bias), q scaled by head_dim^-0.5,
// optional per-block relative position bias and/or a shared bias passed in, added to the logits.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "beitv2/nn/enums.h"

namespace beitv2::nn {

struct AttentionOptions {
  AttentionOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  /// q_bias and v_bias parameters (zeros at init); k gets none.
  TORCH_ARG(bool, qkv_bias) = true;
  /// A per-block relative position bias table over a window_h x window_w grid; 0 = none.
  TORCH_ARG(int64_t, window_h) = 0;
  TORCH_ARG(int64_t, window_w) = 0;
  TORCH_ARG(AttentionBackend, backend) = AttentionBackend::kSdpa;
};

/// Reference attention: softmax(q*scale @ kᵀ + bias) @ v. q, k, v (B, H, N, d); bias undefined or
/// broadcastable to (B, H, N, N). Returns (B, H, N, d).
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& bias);
/// The same through at::scaled_dot_product_attention (bias cast to q's dtype, as autocast requires).
torch::Tensor attention_sdpa(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& bias);

/// Example: `Attention attn(AttentionOptions(768, 12).window_h(14).window_w(14)); attn(x)` with x (B,197,768).
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  explicit AttentionImpl(const AttentionOptions& options);
  void reset() override;
  void pretty_print(std::ostream& os) const override;
  /// x: (B, N, D); shared_bias: undefined or (H, N, N). Returns (B, N, D).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& shared_bias = {});

  AttentionOptions options;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::Tensor q_bias, v_bias;                // (D) each, when qkv_bias
  torch::Tensor relative_position_bias_table;  // (R, H), when windowed
  torch::Tensor relative_position_index;       // (N, N) int64 buffer, when windowed
};
TORCH_MODULE(Attention);

}  // namespace beitv2::nn
