#include "beitv2/nn/patch_embed.h"

#include <torch/torch.h>

namespace beitv2::nn {

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

}  // namespace beitv2::nn
