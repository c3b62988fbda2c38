#include "beitv2/nn/mlp.h"

#include <torch/torch.h>

namespace beitv2::nn {

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

}  // namespace beitv2::nn
