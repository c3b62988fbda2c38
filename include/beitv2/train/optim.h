#pragma once
// Optimisation pieces shared by every trainer: AdamW parameter groups with the official weight-decay and
// layer-decay rules, the official per-step cosine schedule, gradient-norm clipping; and LARS for the linear probe.

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

namespace beitv2 {

/// One AdamW parameter group and the names in it (for logs and tests).
struct ParamGroup {
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
  double weight_decay = 0;
  double lr_scale = 1;  ///< layer-wise lr decay multiplier
};

/// Groups the trainable parameters as the official optim_factory does: parameters with requires_grad false are
/// skipped (teacher, codebook); no weight decay for ndim <= 1, names ending ".bias" and `no_decay` names; with
/// `layer_id` and `layer_decay` < 1, lr_scale = layer_decay^(num_layers - 1 - layer_id(name)). Groups are
/// ordered by (layer id, decay) and empty ones dropped.
std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model, double weight_decay,
                                          const std::set<std::string>& no_decay,
                                          const std::function<int64_t(const std::string&)>& layer_id = {},
                                          int64_t num_layers = 1, double layer_decay = 1.0);

/// AdamW over the groups (lr set per step by apply_lr).
std::unique_ptr<torch::optim::AdamW> make_adamw(const std::vector<ParamGroup>& groups, double lr, double beta1,
                                                double beta2, double eps);

/// Sets every group's lr to lr * lr_scale (and weight decay, which may follow a schedule).
void apply_lr(torch::optim::AdamW& opt, const std::vector<ParamGroup>& groups, double lr, double weight_decay);

/// The official utils.cosine_scheduler: linear warmup from `warmup_start` over warmup_steps (np.linspace,
/// endpoint included), then base..final along half a cosine over the remaining steps. One value per step.
std::vector<double> cosine_schedule(double base, double final, int64_t total_steps, int64_t warmup_steps,
                                    double warmup_start = 0.0);

/// mmcv's PolyLrUpdaterHook (power 1) with linear warmup (mmseg's schedules): after `warmup_steps` steps rising
/// linearly from `warmup_start` (mmcv 'linear' warmup: base * (1 - (1 - ratio) * (1 - i / warmup))), the lr
/// falls as (base - final) * (1 - i / total) + final. One value per step.
std::vector<double> poly_schedule(double base, double final, int64_t total_steps, int64_t warmup_steps,
                                  double warmup_start = 0.0);

/// Total L2 norm of the gradients; with max_norm > 0 scales them to at most max_norm (torch's
/// clip_grad_norm_). Returns the norm before clipping.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

/// LARS options (MAE util/lars.py defaults, except lr which has none there).
struct LarsOptions : torch::optim::OptimizerCloneableOptions<LarsOptions> {
  LarsOptions(double lr = 0.1) : lr_(lr) {}  // NOLINT: implicit, as torch's own options
  TORCH_ARG(double, lr);
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(double, trust_coefficient) = 0.001;

  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

/// LARS's per-parameter state: the momentum buffer.
struct LarsParamState : torch::optim::OptimizerCloneableParamState<LarsParamState> {
  TORCH_ARG(torch::Tensor, mu);
};

/// LARS as MAE's linear probe uses it (facebookresearch/mae util/lars.py, itself after
/// facebookresearch/barlowtwins): for a parameter p with ndim > 1, g += weight_decay * p, then
/// g *= trust_coefficient * |p| / |g| (1 when |p| or |g| is 0); parameters with ndim <= 1 (biases, norms) get
/// neither weight decay nor the trust ratio. Then mu = momentum * mu + g and p -= lr * mu (no dampening, no
/// Nesterov). State is not serialised (the probe keeps none across runs).
///
/// Example: Lars opt(head->parameters(), LarsOptions(0.1 * batch / 256));
class Lars : public torch::optim::Optimizer {
 public:
  explicit Lars(const std::vector<torch::Tensor>& params, LarsOptions defaults = {});
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace beitv2
