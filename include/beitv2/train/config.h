#pragma once
// Typed, strict configs shared by the trainers (STYLE.md §5). Each struct has in-class defaults (the official
// recipe where one exists), validate() naming the key and value, and YAML I/O through YamlMap (unknown keys
// are errors naming file, line and key path).

#include <string>
#include <vector>

#include "beitv2/models/vit_config.h"
#include "beitv2/models/vqkd.h"

namespace beitv2 {

class YamlMap;

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
  void read(YamlMap& m);
  void validate() const;
  std::string to_yaml() const;
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
  void read(YamlMap& m);
  void validate() const;
  std::string to_yaml() const;
};

struct TeacherConfig {
  std::string kind = "torchscript";  ///< torchscript (tools/export_teacher.py file) | native (a beitv2 ViT)
  std::string path;                  ///< .pt for torchscript; weights .safetensors for native ("" = random init)
  ViTConfig native_model;            ///< native: the ViT (`model:` sub-mapping, preset or fields)
  bool bf16 = false;                 ///< run a TorchScript teacher under bf16 autocast on CUDA
  void read(YamlMap& m);
  void validate() const;
  std::string to_yaml() const;
};

struct TrainConfig {
  int64_t epochs = 100;          ///< exactly one of epochs / steps may be given
  int64_t steps = 0;             ///< > 0: total optimizer steps (overrides epochs)
  int64_t seed = 0;
  std::string out_dir = "runs/train";
  int64_t log_every = 10;        ///< steps between progress lines / metrics records (at most)
  double log_seconds = 30;       ///< ... or seconds, whichever comes first (and always after the first step)
  int64_t save_every = 500;      ///< steps between checkpoints (and one at every epoch end and at the end)
  int64_t keep_last = 3;         ///< checkpoints kept
  int64_t max_nonfinite = 5;     ///< consecutive non-finite losses that stop the run
  std::string device = "cpu";    ///< cpu | cuda
  std::string amp = "none";      ///< none | bf16 (CUDA autocast; fp32 islands stay fp32)
  int64_t threads = 0;           ///< intra-op threads; 0 = all cores
  int64_t plot_images = 4;       ///< validation images drawn as token maps each epoch (0 = none)
  void read(YamlMap& m);
  void validate() const;
  std::string to_yaml() const;
};

/// The whole train-vqkd config file: model (VqkdConfig), teacher, data, optim, train.
struct VqkdTrainConfig {
  VqkdConfig model;
  TeacherConfig teacher;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  /// Loads `file`, applies "a.b=c" overrides, reads strictly and validates. Throws ConfigError.
  static VqkdTrainConfig load(const std::string& file, const std::vector<std::string>& overrides = {});
  void validate() const;
  std::string to_yaml() const;
};

}  // namespace beitv2
