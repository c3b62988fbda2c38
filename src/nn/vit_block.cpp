#include "beitv2/nn/vit_block.h"

#include <torch/torch.h>

namespace beitv2::nn {

BlockImpl::BlockImpl(const BlockOptions& options_) : options(options_) { reset(); }

void BlockImpl::reset() {
  const auto& o = options;
  auto ln = torch::nn::LayerNormOptions({o.dim()}).eps(o.norm_eps());
  norm1 = register_module("norm1", torch::nn::LayerNorm(ln));
  attn = register_module("attn", Attention(AttentionOptions(o.dim(), o.num_heads())
                                               .qkv_bias(o.qkv_bias())
                                               .window_h(o.window_h())
                                               .window_w(o.window_w())
                                               .backend(o.backend())));
  drop_path = register_module("drop_path", DropPath(o.drop_path()));
  norm2 = register_module("norm2", torch::nn::LayerNorm(ln));
  const auto hidden = static_cast<int64_t>(static_cast<double>(o.dim()) * o.mlp_ratio());
  mlp = register_module("mlp", Mlp(MlpOptions(o.dim(), hidden).act(o.act())));
  if (o.init_values() > 0) {
    gamma_1 = register_parameter("gamma_1", torch::full({o.dim()}, o.init_values()));
    gamma_2 = register_parameter("gamma_2", torch::full({o.dim()}, o.init_values()));
  }
}

void BlockImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::nn::Block(dim=" << options.dim() << ", heads=" << options.num_heads()
     << ", drop_path=" << options.drop_path() << ", init_values=" << options.init_values() << ")";
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& shared_bias) {
  auto a = attn(norm1(x), shared_bias);
  auto y = x + drop_path(gamma_1.defined() ? gamma_1 * a : a);
  auto m = mlp(norm2(y));
  return y + drop_path(gamma_2.defined() ? gamma_2 * m : m);
}

}  // namespace beitv2::nn
