#pragma once
// Typed, strict configs shared by the trainers. Each struct has in-class defaults (the official recipe where
// one exists), its fields named once in visit() (read, YAML and table come from there: core/config_yaml.h),
// and validate() naming the key and the bad value.

#include <string>
#include <vector>

#include "beitv2/core/config_fields.h"
#include "beitv2/models/vit_config.h"
#include "beitv2/models/vqkd.h"

namespace beitv2 {

struct OptimConfig {
  double lr = 5e-5;             ///< base learning rate (official --lr)
  bool scale_lr = true;         ///< lr *= total batch / 128, as run_vqkd_training.py does
  double min_lr = 1e-5;         ///< cosine floor
  double warmup_lr = 0.0;       ///< start of the linear warmup
  double weight_decay = 1e-4;   ///< constant (no WD schedule in the VQ-KD script)
  double beta1 = 0.9;
  double beta2 = 0.99;
  double eps = 1e-8;
  int64_t warmup_epochs = 10;   ///< exactly one of warmup_epochs / warmup_steps may be given
  int64_t warmup_steps = -1;    ///< >= 0 overrides warmup_epochs
  double clip_grad = 0.0;       ///< max grad norm; 0 = no clipping (the norm is still logged)
  std::string schedule = "cosine";  ///< cosine (the BEiT scripts) | poly (mmseg: (1 - t)^1 to min_lr)

  template <class V>
  void visit(V& v) {
    v("lr", lr);
    v("scale_lr", scale_lr);
    v("min_lr", min_lr);
    v("warmup_lr", warmup_lr);
    v("weight_decay", weight_decay);
    v("beta1", beta1);
    v("beta2", beta2);
    v("eps", eps);
    v("warmup_epochs", warmup_epochs, warmup_steps < 0);
    v("warmup_steps", warmup_steps, warmup_steps >= 0);
    v("clip_grad", clip_grad);
    v("schedule", schedule);
  }
  void validate() const;
};

struct DataConfig {
  std::string train;                 ///< folder of images (searched recursively)
  std::string val;                   ///< optional validation folder
  int64_t batch_size = 64;           ///< per process
  int64_t val_batch_size = 0;        ///< 0 = 1.5 x batch_size (official)
  int64_t workers = 2;               ///< decoding threads
  double min_crop_scale = 0.08;      ///< RandomResizedCrop scale lower bound
  std::string interpolation = "bicubic";
  std::string decode_errors = "skip";  ///< skip (warn and count) | fail
  int64_t limit = 0;                 ///< use at most this many training images (0 = all)
  int64_t max_pixels = 64'000'000;   ///< larger images are decode errors (checked from the header); 0 = no limit

  template <class V>
  void visit(V& v) {
    v("train", train);
    v("val", val);
    v("batch_size", batch_size);
    v("val_batch_size", val_batch_size);
    v("workers", workers);
    v("min_crop_scale", min_crop_scale);
    v("interpolation", interpolation);
    v("decode_errors", decode_errors);
    v("limit", limit);
    v("max_pixels", max_pixels);
  }
  void validate() const;
};

struct TeacherConfig {
  std::string kind = "torchscript";  ///< torchscript (tools/export_teacher.py file) | native (a beitv2 ViT)
  std::string path;                  ///< .pt for torchscript; weights .safetensors for native ("" = random init)
  ViTConfig native_model;            ///< native: the ViT (`model:` sub-mapping, preset or fields)
  bool bf16 = false;                 ///< run a TorchScript teacher under bf16 autocast on CUDA

  template <class V>
  void visit(V& v) {
    v("kind", kind);
    v("path", path);
    v("bf16", bf16);
    v("model", native_model, kind == "native");
  }
  void validate() const;
};

struct TrainConfig {
  int64_t epochs = 100;          ///< exactly one of epochs / steps may be given
  int64_t steps = 0;             ///< > 0: total optimizer steps (overrides epochs)
  int64_t seed = 0;
  std::string out_dir = "runs/train";
  int64_t log_every = 10;        ///< a progress line / metrics record at every multiple of this step
  double log_seconds = 30;       ///< ... or seconds, whichever comes first (and always after the first step)
  int64_t eval_every = 1;        ///< epochs between evaluations (and one at the end)
  int64_t save_every = 500;      ///< steps between checkpoints (and one at every epoch end and at the end)
  int64_t keep_last = 3;         ///< checkpoints kept
  int64_t max_nonfinite = 5;     ///< consecutive non-finite losses that stop the run
  std::string device = "cpu";    ///< cpu | cuda
  std::string amp = "none";      ///< none | bf16 (CUDA autocast; fp32 islands stay fp32)
  std::string dist_backend = "auto";  ///< multi-process runs (train/dist.h): auto (nccl on cuda, else gloo) | gloo | nccl
  double dist_timeout = 1800;    ///< seconds a collective or the rendezvous may wait (a lost rank fails after this)
  int64_t threads = 0;           ///< intra-op threads; 0 = all cores
  int64_t plot_images = 4;       ///< validation images drawn as token maps each epoch (0 = none)

  template <class V>
  void visit(V& v) {
    v("epochs", epochs, steps <= 0);
    v("steps", steps, steps > 0);
    v("seed", seed);
    v("out_dir", out_dir);
    v("log_every", log_every);
    v("log_seconds", log_seconds);
    v("eval_every", eval_every);
    v("save_every", save_every);
    v("keep_last", keep_last);
    v("max_nonfinite", max_nonfinite);
    v("device", device);
    v("amp", amp);
    v("dist_backend", dist_backend);
    v("dist_timeout", dist_timeout);
    v("threads", threads);
    v("plot_images", plot_images);
  }
  void validate() const;
  /// The run's optimizer steps with `per_epoch` batches an epoch.
  int64_t total_steps(int64_t per_epoch) const { return steps > 0 ? steps : epochs * per_epoch; }
  /// Whether the evaluation after `epoch` is the run's last (the one at its final step).
  bool final_epoch(int64_t epoch, int64_t per_epoch) const { return epoch == (total_steps(per_epoch) - 1) / per_epoch; }
};

class YamlMap;
/// Sections with a rule across fields (exactly one of epochs/steps, warmup_epochs/warmup_steps).
void read_yaml(YamlMap& m, OptimConfig& c);
void read_yaml(YamlMap& m, TrainConfig& c);

/// The whole train-vqkd config file: model (VqkdConfig), teacher, data, optim, train.
struct VqkdTrainConfig {
  VqkdConfig model = vqkd_preset("vqkd_encoder_base_decoder_3x768x12_clip");  ///< the recommended official one
  TeacherConfig teacher;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;

  template <class V>
  void visit(V& v) {
    v("model", model);
    v("teacher", teacher);
    v("data", data);
    v("optim", optim);
    v("train", train);
  }
  /// Loads `file`, applies "a.b=c" overrides, reads strictly and validates. Throws ConfigError.
  static VqkdTrainConfig load(const std::string& file, const std::vector<std::string>& overrides = {});
  void validate() const;
  std::string to_yaml() const;
};

}  // namespace beitv2
