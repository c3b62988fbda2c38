// Parameter groups, schedule, clipping (official beit2/optim_factory.py and utils.py at 768a3c8); LARS
// (facebookresearch/mae util/lars.py).
#include "beitv2/train/optim.h"

#include <torch/torch.h>

#include <cmath>
#include <map>

namespace beitv2 {

std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model, double weight_decay,
                                          const std::set<std::string>& no_decay,
                                          const std::function<int64_t(const std::string&)>& layer_id,
                                          int64_t num_layers, double layer_decay) {
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  std::map<std::pair<int64_t, bool>, ParamGroup> by_key;
  for (const auto& p : model.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    const std::string& name = p.key();
    const bool decay = !(p.value().dim() <= 1 || ends_with(name, ".bias") || no_decay.count(name));
    const int64_t id = layer_id ? layer_id(name) : 0;
    auto& g = by_key[{id, decay}];
    g.names.push_back(name);
    g.params.push_back(p.value());
    g.weight_decay = decay ? weight_decay : 0.0;
    g.lr_scale = layer_decay < 1.0 ? std::pow(layer_decay, static_cast<double>(num_layers - 1 - id)) : 1.0;
  }
  std::vector<ParamGroup> groups;
  for (auto& [_, g] : by_key) groups.push_back(std::move(g));
  return groups;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(const std::vector<ParamGroup>& groups, double lr, double beta1,
                                                double beta2, double eps) {
  std::vector<torch::optim::OptimizerParamGroup> pg;
  for (const auto& g : groups) {
    auto opts = std::make_unique<torch::optim::AdamWOptions>(lr * g.lr_scale);
    opts->betas({beta1, beta2}).eps(eps).weight_decay(g.weight_decay);
    pg.emplace_back(g.params, std::move(opts));
  }
  return std::make_unique<torch::optim::AdamW>(pg, torch::optim::AdamWOptions(lr).betas({beta1, beta2}).eps(eps));
}

void apply_lr(torch::optim::AdamW& opt, const std::vector<ParamGroup>& groups, double lr, double weight_decay) {
  auto& pgs = opt.param_groups();
  TORCH_CHECK(pgs.size() == groups.size(), "apply_lr: ", pgs.size(), " optimizer groups vs ", groups.size());
  for (size_t i = 0; i < pgs.size(); ++i) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(pgs[i].options());
    o.lr(lr * groups[i].lr_scale);
    if (groups[i].weight_decay > 0) o.weight_decay(weight_decay);
  }
}

std::vector<double> cosine_schedule(double base, double final, int64_t total_steps, int64_t warmup_steps,
                                    double warmup_start) {
  TORCH_CHECK(total_steps > 0 && warmup_steps >= 0 && warmup_steps <= total_steps,
              "cosine_schedule: need 0 <= warmup_steps (", warmup_steps, ") <= total_steps (", total_steps, ")");
  std::vector<double> out;
  out.reserve(total_steps);
  for (int64_t i = 0; i < warmup_steps; ++i) {  // np.linspace(start, base, warmup_steps)
    out.push_back(warmup_steps == 1 ? warmup_start
                                    : warmup_start + (base - warmup_start) * static_cast<double>(i) /
                                                         static_cast<double>(warmup_steps - 1));
  }
  const int64_t n = total_steps - warmup_steps;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(final + 0.5 * (base - final) * (1 + std::cos(M_PI * static_cast<double>(i) / static_cast<double>(n))));
  }
  return out;
}

std::vector<double> poly_schedule(double base, double final, int64_t total_steps, int64_t warmup_steps,
                                  double warmup_start) {
  TORCH_CHECK(total_steps > 0 && warmup_steps >= 0 && warmup_steps <= total_steps,
              "poly_schedule: need 0 <= warmup_steps (", warmup_steps, ") <= total_steps (", total_steps, ")");
  std::vector<double> out;
  out.reserve(total_steps);
  for (int64_t i = 0; i < total_steps; ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(total_steps);
    const double lr = (base - final) * (1 - t) + final;
    if (i < warmup_steps) {  // mmcv linear warmup on top of the regular value
      const double ratio = base > 0 ? warmup_start / base : 0.0;
      out.push_back(lr * (1 - (1 - ratio) * (1 - static_cast<double>(i) / static_cast<double>(warmup_steps))));
    } else {
      out.push_back(lr);
    }
  }
  return out;
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return 0.0;
  if (max_norm > 0) return torch::nn::utils::clip_grad_norm_(params, max_norm);
  std::vector<torch::Tensor> norms;
  for (const auto& g : grads) norms.push_back(g.detach().norm(2).to(torch::kFloat64));
  return torch::stack(norms).norm(2).item<double>();
}

Lars::Lars(const std::vector<torch::Tensor>& params, LarsOptions defaults)
    : Optimizer({torch::optim::OptimizerParamGroup(params)}, std::make_unique<LarsOptions>(defaults)) {
  TORCH_CHECK(defaults.lr() >= 0, "Lars: lr ", defaults.lr(), " must be >= 0");
  TORCH_CHECK(defaults.momentum() >= 0, "Lars: momentum ", defaults.momentum(), " must be >= 0");
}

torch::Tensor Lars::step(LossClosure closure) {
  torch::NoGradGuard ng;
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const LarsOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      torch::Tensor dp = p.grad();
      if (p.dim() > 1) {  // not a bias or a norm's gain: weight decay and the trust ratio
        dp = dp.add(p, o.weight_decay());
        const auto param_norm = torch::norm(p);
        const auto update_norm = torch::norm(dp);
        const auto one = torch::ones_like(param_norm);
        const auto q = torch::where(param_norm > 0.,
                                    torch::where(update_norm > 0, o.trust_coefficient() * param_norm / update_norm, one),
                                    one);
        dp = dp.mul(q);
      }
      auto& slot = state_[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto s = std::make_unique<LarsParamState>();
        s->mu(torch::zeros_like(p));
        slot = std::move(s);
      }
      auto& mu = static_cast<LarsParamState&>(*slot).mu();
      mu.mul_(o.momentum()).add_(dp);
      p.add_(mu, -o.lr());
    }
  }
  return loss;
}

}  // namespace beitv2
