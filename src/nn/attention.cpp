// Multi-head attention (official beit2/modeling_finetune.py, modeling_pretrain.py; timm/models/beit.py).
// docs/reference.md §0.
#include "beitv2/nn/attention.h"

#include <torch/torch.h>

#include <cmath>

#include "beitv2/nn/rel_pos_bias.h"

namespace beitv2::nn {

// ---- attention kernels ----

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& bias) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto logits = torch::matmul(q * scale, k.transpose(-2, -1));  // B, H, N, N
  if (bias.defined()) logits = logits + bias;
  return torch::matmul(logits.softmax(-1), v);  // B, H, N, d
}

torch::Tensor attention_sdpa(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& bias) {
  std::optional<torch::Tensor> mask;
  if (bias.defined()) mask = bias.to(q.scalar_type());
  return at::scaled_dot_product_attention(q, k, v, mask);
}

// ---- Attention module ----

AttentionImpl::AttentionImpl(const AttentionOptions& options_) : options(options_) { reset(); }

void AttentionImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.dim() > 0 && o.num_heads() > 0 && o.dim() % o.num_heads() == 0,
              "Attention: dim ", o.dim(), " must be a positive multiple of num_heads ", o.num_heads());
  TORCH_CHECK((o.window_h() > 0) == (o.window_w() > 0), "Attention: window must be both >0 or both 0, got ",
              o.window_h(), "x", o.window_w());
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(o.dim(), 3 * o.dim()).bias(false)));
  if (o.qkv_bias()) {
    q_bias = register_parameter("q_bias", torch::zeros({o.dim()}));
    v_bias = register_parameter("v_bias", torch::zeros({o.dim()}));
  }
  if (o.window_h() > 0) {
    relative_position_bias_table = register_parameter(
        "relative_position_bias_table",
        torch::zeros({num_relative_distance(o.window_h(), o.window_w()), o.num_heads()}));
    relative_position_index =
        register_buffer("relative_position_index", beitv2::nn::relative_position_index(o.window_h(), o.window_w()));
  }
  proj = register_module("proj", torch::nn::Linear(o.dim(), o.dim()));
}

void AttentionImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::nn::Attention(dim=" << options.dim() << ", heads=" << options.num_heads()
     << ", qkv_bias=" << options.qkv_bias();
  if (options.window_h() > 0) os << ", window=" << options.window_h() << "x" << options.window_w();
  os << ", backend=" << to_string(options.backend()) << ")";
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& shared_bias) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options.dim(), "Attention: expected input (B, N, ", options.dim(),
              "), got ", x.sizes());
  const int64_t B = x.size(0), N = x.size(1), D = options.dim(), H = options.num_heads();

  torch::Tensor bias_qkv;
  if (q_bias.defined()) bias_qkv = torch::cat({q_bias, torch::zeros_like(v_bias), v_bias});
  auto qkv_out = torch::nn::functional::linear(x, qkv->weight, bias_qkv)  // B, N, 3D
                     .reshape({B, N, 3, H, D / H})
                     .permute({2, 0, 3, 1, 4});  // 3, B, H, N, d
  auto q = qkv_out[0], k = qkv_out[1], v = qkv_out[2];

  torch::Tensor bias;
  if (relative_position_bias_table.defined()) {
    TORCH_CHECK(N == relative_position_index.size(0), "Attention: relative position bias is for ",
                relative_position_index.size(0), " tokens (", options.window_h(), "x", options.window_w(),
                " patches + cls), got ", N);
    bias = gather_relative_position_bias(relative_position_bias_table, relative_position_index);  // H, N, N
  }
  if (shared_bias.defined()) {
    TORCH_CHECK(shared_bias.dim() == 3 && shared_bias.size(0) == H && shared_bias.size(1) == N &&
                    shared_bias.size(2) == N,
                "Attention: shared bias must be (", H, ", ", N, ", ", N, "), got ", shared_bias.sizes());
    bias = bias.defined() ? bias + shared_bias : shared_bias;
  }
  auto out = options.backend() == AttentionBackend::kSdpa ? attention_sdpa(q, k, v, bias)
                                                          : attention_reference(q, k, v, bias);
  return proj(out.transpose(1, 2).reshape({B, N, D}));
}

}  // namespace beitv2::nn
