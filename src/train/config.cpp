#include "beitv2/train/config.h"

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/image.h"
#include "beitv2/models/registry.h"

namespace beitv2 {
namespace {

// Exactly one of two duration keys.
void one_of(YamlMap& m, const char* a, const char* b) {
  if (m.has(a) && m.has(b)) m.fail(b, std::string("give either ") + a + " or " + b + ", not both");
}

}  // namespace

void read_yaml(YamlMap& m, OptimConfig& c) {
  one_of(m, "warmup_epochs", "warmup_steps");
  read_fields(m, c);
}

void read_yaml(YamlMap& m, TrainConfig& c) {
  one_of(m, "epochs", "steps");
  const bool has_steps = m.has("steps");
  read_fields(m, c);
  if (has_steps && c.steps <= 0) m.fail("steps", "must be positive, got " + std::to_string(c.steps));
}

void OptimConfig::validate() const {
  if (!(lr > 0)) config_fail("optim.lr", config_text(lr), "must be positive");
  if (min_lr < 0) config_fail("optim.min_lr", config_text(min_lr), "must be >= 0");
  if (weight_decay < 0) config_fail("optim.weight_decay", config_text(weight_decay), "must be >= 0");
  if (!(beta1 >= 0 && beta1 < 1)) config_fail("optim.beta1", config_text(beta1), "must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) config_fail("optim.beta2", config_text(beta2), "must be in [0, 1)");
  if (!(eps > 0)) config_fail("optim.eps", config_text(eps), "must be positive");
  if (warmup_epochs < 0) config_fail("optim.warmup_epochs", config_text(warmup_epochs), "must be >= 0");
  if (warmup_steps < -1) config_fail("optim.warmup_steps", config_text(warmup_steps), "must be >= 0");
  if (clip_grad < 0) config_fail("optim.clip_grad", config_text(clip_grad), "must be >= 0 (0 = off)");
  if (schedule != "cosine" && schedule != "poly") config_fail("optim.schedule", schedule, "cosine or poly");
}

void DataConfig::validate() const {
  if (train.empty()) config_fail("data.train", "\"\"", "a training image folder is required");
  if (batch_size <= 0) config_fail("data.batch_size", config_text(batch_size), "must be positive");
  if (val_batch_size < 0) config_fail("data.val_batch_size", config_text(val_batch_size), "must be >= 0");
  if (workers < 0 || workers > 256) config_fail("data.workers", config_text(workers), "must be in [0, 256]");
  if (!(min_crop_scale > 0 && min_crop_scale <= 1)) {
    config_fail("data.min_crop_scale", config_text(min_crop_scale), "must be in (0, 1]");
  }
  try {
    data::parse_interpolation(interpolation);
  } catch (const std::invalid_argument& e) {
    config_fail("data.interpolation", interpolation, e.what());
  }
  if (decode_errors != "skip" && decode_errors != "fail") config_fail("data.decode_errors", decode_errors, "skip or fail");
  if (limit < 0) config_fail("data.limit", config_text(limit), "must be >= 0");
  if (max_pixels < 0) config_fail("data.max_pixels", config_text(max_pixels), "must be >= 0 (0 = no limit)");
}

void TeacherConfig::validate() const {
  if (kind != "torchscript" && kind != "native") config_fail("teacher.kind", kind, "torchscript or native");
  if (kind == "torchscript" && path.empty()) {
    config_fail("teacher.path", "\"\"", "a TorchScript teacher file is required (tools/export_teacher.py makes one)");
  }
}

void TrainConfig::validate() const {
  if (steps < 0) config_fail("train.steps", config_text(steps), "must be positive (or absent: train.epochs)");
  if (steps == 0 && epochs <= 0) config_fail("train.epochs", config_text(epochs), "must be positive");
  if (out_dir.empty()) config_fail("train.out_dir", "\"\"", "required");
  if (log_every <= 0) config_fail("train.log_every", config_text(log_every), "must be positive");
  if (!(log_seconds > 0)) config_fail("train.log_seconds", config_text(log_seconds), "must be positive");
  if (eval_every <= 0) config_fail("train.eval_every", config_text(eval_every), "must be positive (epochs)");
  if (save_every <= 0) config_fail("train.save_every", config_text(save_every), "must be positive");
  if (keep_last < 1) config_fail("train.keep_last", config_text(keep_last), "must be >= 1");
  if (max_nonfinite < 1) config_fail("train.max_nonfinite", config_text(max_nonfinite), "must be >= 1");
  if (device != "cpu" && device != "cuda") config_fail("train.device", device, "cpu or cuda");
  if (amp != "none" && amp != "bf16") config_fail("train.amp", amp, "none or bf16");
  if (dist_backend != "auto" && dist_backend != "gloo" && dist_backend != "nccl") {
    config_fail("train.dist_backend", dist_backend, "auto, gloo or nccl");
  }
  if (!(dist_timeout > 0)) config_fail("train.dist_timeout", std::to_string(dist_timeout), "positive (seconds)");
  if (threads < 0) config_fail("train.threads", config_text(threads), "must be >= 0");
}

VqkdTrainConfig VqkdTrainConfig::load(const std::string& file, const std::vector<std::string>& overrides) {
  return load_config<VqkdTrainConfig>(file, overrides);
}

void VqkdTrainConfig::validate() const {
  model.validate();
  teacher.validate();
  data.validate();
  optim.validate();
  train.validate();
}

std::string VqkdTrainConfig::to_yaml() const { return beitv2::to_yaml(*this); }

}  // namespace beitv2
