#include "beitv2/nn/drop_path.h"

#include <torch/torch.h>

#include <vector>

namespace beitv2::nn {

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

}  // namespace beitv2::nn
