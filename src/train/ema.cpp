// Model EMA (include/beitv2/train/ema.h; timm 0.4.12 timm/utils/model_ema.py ModelEma).
#include "beitv2/train/ema.h"

#include <torch/torch.h>

#include "beitv2/io/state_dict.h"

namespace beitv2 {

ModelEma::ModelEma(std::shared_ptr<torch::nn::Module> ema, const torch::nn::Module& model, double decay)
    : ema_(std::move(ema)), decay_(decay) {
  TORCH_CHECK(decay_ >= 0 && decay_ <= 1, "ModelEma: decay ", decay_, " must be in [0, 1]");
  for (auto& p : ema_->parameters(true)) p.set_requires_grad(false);
  ema_->eval();
  for (const auto& [name, t] : state_dict(*ema_)) {
    if (t.is_floating_point()) averaged_.emplace_back(name, t);
  }
  reset(model);
}

void ModelEma::reset(const torch::nn::Module& model) {
  load_state_dict(*ema_, state_dict(model), {}, "ModelEma: the model");
}

void ModelEma::update(const torch::nn::Module& model) {
  torch::NoGradGuard ng;
  const auto now = state_dict(model);
  for (auto& [name, e] : averaged_) {
    const auto it = now.find(name);
    TORCH_CHECK(it != now.end(), "ModelEma::update: the model has no tensor '", name, "'");
    e.mul_(decay_).add_(it->second, 1.0 - decay_);
  }
}

TensorMap ModelEma::state() const {
  TensorMap out;
  for (const auto& [name, t] : averaged_) out.emplace(name, t.detach());
  return out;
}

void ModelEma::load(const TensorMap& tensors, const std::string& source) {
  std::string problems;
  for (const auto& [name, _] : tensors) {
    bool known = false;
    for (const auto& a : averaged_) known = known || a.first == name;
    if (!known) problems += (problems.empty() ? "" : "; ") + ("unknown tensor '" + name + "'");
  }
  for (const auto& [name, e] : averaged_) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) {
      problems += (problems.empty() ? "" : "; ") + ("no tensor '" + name + "'");
    } else if (it->second.sizes() != e.sizes()) {
      problems += (problems.empty() ? "" : "; ") + c10::str("'", name, "' has shape ", it->second.sizes(), ", expected ", e.sizes());
    }
  }
  if (!problems.empty()) throw std::runtime_error(source + ": not this model's EMA: " + problems);
  torch::NoGradGuard ng;
  for (auto& [name, e] : averaged_) e.copy_(tensors.at(name));
}

}  // namespace beitv2
