#pragma once
// Stochastic depth (Huang et al. 2016) as in timm: drop the whole residual branch per sample.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace beitv2::nn {

struct DropPathOptions {
  /* implicit */ DropPathOptions(double p = 0.0) : p_(p) {}
  /// Probability of dropping a sample's branch in training; 0 makes the module an identity.
  TORCH_ARG(double, p);
};

/// Example: `DropPath dp(0.1); y = dp(x);` — in training each sample's x is zeroed with probability p and
/// the kept ones are scaled by 1/(1-p); in eval it returns x.
class DropPathImpl : public torch::nn::Cloneable<DropPathImpl> {
 public:
  explicit DropPathImpl(const DropPathOptions& options = {});
  void reset() override;
  void pretty_print(std::ostream& os) const override;
  /// x: (B, ...) -> same shape.
  torch::Tensor forward(const torch::Tensor& x);

  DropPathOptions options;
};
TORCH_MODULE(DropPath);

}  // namespace beitv2::nn
