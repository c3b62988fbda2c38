// The small ViT building blocks: option enums, DropPath, PatchEmbed, Mlp, Block, trunc_normal_.
// (Grouped in one translation unit to keep the build fast; each has its own header.)
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

#include "beitv2/nn/drop_path.h"
#include "beitv2/nn/init.h"
#include "beitv2/nn/mlp.h"
#include "beitv2/nn/options.h"
#include "beitv2/nn/patch_embed.h"
#include "beitv2/nn/vit_block.h"

namespace beitv2 {

Activation parse_activation(const std::string& s) {
  if (s == "gelu") return Activation::kGELU;
  if (s == "quick_gelu") return Activation::kQuickGELU;
  throw std::invalid_argument("unknown activation '" + s + "' (expected gelu or quick_gelu)");
}

std::string to_string(Activation a) { return a == Activation::kGELU ? "gelu" : "quick_gelu"; }

AttentionBackend parse_attention_backend(const std::string& s) {
  if (s == "sdpa") return AttentionBackend::kSdpa;
  if (s == "reference") return AttentionBackend::kReference;
  throw std::invalid_argument("unknown attention backend '" + s + "' (expected sdpa or reference)");
}

std::string to_string(AttentionBackend b) { return b == AttentionBackend::kSdpa ? "sdpa" : "reference"; }

namespace nn {

// ---- DropPath ----

DropPathImpl::DropPathImpl(const DropPathOptions& options_) : options(options_) { reset(); }

void DropPathImpl::reset() {
  TORCH_CHECK(options.p() >= 0.0 && options.p() < 1.0, "DropPath: p must be in [0, 1), got ", options.p());
}

void DropPathImpl::pretty_print(std::ostream& os) const { os << "beitv2::nn::DropPath(p=" << options.p() << ")"; }

torch::Tensor DropPathImpl::forward(const torch::Tensor& x) {
  if (!is_training() || options.p() == 0.0) return x;
  const double keep = 1.0 - options.p();
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto mask = torch::empty(shape, x.options()).bernoulli_(keep);
  return x.div(keep) * mask;
}

// ---- PatchEmbed ----

PatchEmbedImpl::PatchEmbedImpl(const PatchEmbedOptions& options_) : options(options_) { reset(); }

void PatchEmbedImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.patch_size() > 0 && o.img_size() > 0 && o.img_size() % o.patch_size() == 0,
              "PatchEmbed: image size ", o.img_size(), " is not divisible by patch size ", o.patch_size());
  proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_chans(), o.embed_dim(),
                                                                            o.patch_size())
                                                       .stride(o.patch_size())));
}

void PatchEmbedImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::nn::PatchEmbed(img=" << options.img_size() << ", patch=" << options.patch_size()
     << ", in_chans=" << options.in_chans() << ", dim=" << options.embed_dim() << ")";
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& x) {
  const auto& o = options;
  TORCH_CHECK(x.dim() == 4, "PatchEmbed: expected a (B, C, H, W) batch, got a tensor of rank ", x.dim(),
              " with shape ", x.sizes());
  TORCH_CHECK(x.size(1) == o.in_chans(), "PatchEmbed: expected ", o.in_chans(), " channels, got ", x.size(1),
              " (input shape ", x.sizes(), ")");
  TORCH_CHECK(x.size(2) % o.patch_size() == 0 && x.size(3) % o.patch_size() == 0, "PatchEmbed: H=", x.size(2),
              ", W=", x.size(3), " not divisible by patch ", o.patch_size());
  TORCH_CHECK(x.size(2) == o.img_size() && x.size(3) == o.img_size(), "PatchEmbed: input is ", x.size(2), "x",
              x.size(3), " but the model was built for ", o.img_size(), "x", o.img_size());
  return proj(x).flatten(2).transpose(1, 2);  // B, N, D
}

// ---- Mlp ----

MlpImpl::MlpImpl(const MlpOptions& options_) : options(options_) { reset(); }

void MlpImpl::reset() {
  fc1 = register_module("fc1", torch::nn::Linear(options.in_features(), options.hidden_features()));
  fc2 = register_module("fc2", torch::nn::Linear(options.hidden_features(), options.in_features()));
}

void MlpImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::nn::Mlp(" << options.in_features() << " -> " << options.hidden_features() << ", "
     << to_string(options.act()) << ")";
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  auto h = fc1(x);
  h = options.act() == Activation::kGELU ? torch::gelu(h) : h * torch::sigmoid(1.702 * h);
  return fc2(h);
}

// ---- Block ----

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

// ---- init ----

void trunc_normal_(torch::Tensor t, double std, double a, double b, double mean) {
  // Inverse-CDF method of torch.nn.init.trunc_normal_: uniform in [cdf(a), cdf(b)] mapped through erfinv.
  torch::NoGradGuard no_grad;
  auto cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = cdf((a - mean) / std), u = cdf((b - mean) / std);
  t.uniform_(2 * l - 1, 2 * u - 1);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.0));
  t.add_(mean);
  t.clamp_(a, b);
}

}  // namespace nn
}  // namespace beitv2
