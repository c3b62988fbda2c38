#pragma once
// Transformer MLP: fc1 -> activation -> fc2 (dropout rate is 0 everywhere in BEiT v2, so there is none).

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "beitv2/nn/enums.h"

namespace beitv2::nn {

struct MlpOptions {
  MlpOptions(int64_t in_features, int64_t hidden_features) : in_features_(in_features), hidden_features_(hidden_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, hidden_features);
  TORCH_ARG(Activation, act) = Activation::kGELU;
};

/// Example: `Mlp mlp(MlpOptions(768, 3072)); mlp(x)` with x (B,N,768) -> (B,N,768).
class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  explicit MlpImpl(const MlpOptions& options);
  void reset() override;
  void pretty_print(std::ostream& os) const override;
  /// x: (..., in) -> (..., in).
  torch::Tensor forward(const torch::Tensor& x);

  MlpOptions options;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace beitv2::nn
