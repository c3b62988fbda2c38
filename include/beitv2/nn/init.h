#pragma once
// Weight initialisers shared by the models.

#include <torch/types.h>

namespace beitv2::nn {

/// In-place truncated normal, as torch.nn.init.trunc_normal_ / timm: N(mean, std) restricted to [a, b]
/// (absolute bounds) by inverse-CDF sampling. With a=-2, b=2 and std .02 (the official fine-tuning code,
/// timm 0.4.12) this is effectively untruncated; the official pretraining code passes a=-std, b=std.
void trunc_normal_(torch::Tensor t, double std, double a, double b, double mean = 0.0);

}  // namespace beitv2::nn
