#pragma once
// Model EMA for fine-tuning: timm 0.4.12's ModelEma (timm/utils/model_ema.py), which the official
// run_class_finetuning.py uses with --model_ema (decay 0.9999, off by default; docs/reference.md §5).
//
// The average is a second instance of the model: after every applied optimizer step (the loop's after_update
// hook; never after a skipped step), ema = decay * ema + (1 - decay) * model over the floating-point parameters
// and buffers. Integer buffers (relative_position_index) are left as built: timm's ModelEma averages every
// state_dict entry and copies the float result back into the int64 index, truncating values the rounding puts
// just below an integer (docs/divergences.md D16).

#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <vector>

#include "beitv2/io/safetensors.h"

namespace beitv2 {

/// The average of a model's weights over its optimizer steps.
///
/// Example (a trainer's after_update):
///   ModelEma ema(VisionTransformer(cfg).ptr(), *model, 0.9999);  // after each applied step:
///   ema.update(*model);                                           // ema.module() is the averaged model
class ModelEma {
 public:
  /// `ema` is a separate instance of `model`'s architecture (same names and shapes); every tensor of `model`
  /// is copied into it (timm: a deepcopy). It is put in eval mode and never receives gradients.
  ModelEma(std::shared_ptr<torch::nn::Module> ema, const torch::nn::Module& model, double decay);

  /// ema = decay * ema + (1 - decay) * model, over the floating-point parameters and buffers.
  void update(const torch::nn::Module& model);
  /// Copies every tensor of `model` into the average again.
  void reset(const torch::nn::Module& model);

  /// The averaged tensors by name (what a checkpoint keeps).
  TensorMap state() const;
  /// Restores a state(); throws std::runtime_error naming `source` for a missing, unknown or mis-shaped tensor.
  void load(const TensorMap& tensors, const std::string& source);

  torch::nn::Module& module() { return *ema_; }
  const torch::nn::Module& module() const { return *ema_; }
  double decay() const { return decay_; }

 private:
  std::shared_ptr<torch::nn::Module> ema_;
  std::vector<std::pair<std::string, torch::Tensor>> averaged_;  // the floating-point tensors of ema_
  double decay_;
};

}  // namespace beitv2
