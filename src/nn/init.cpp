#include "beitv2/nn/init.h"

#include <torch/torch.h>

#include <cmath>

namespace beitv2::nn {

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

}  // namespace beitv2::nn
