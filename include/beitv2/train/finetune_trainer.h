#pragma once
// finetune-beitv2: image classification fine-tuning of a BEiT v2 backbone (docs/reference.md §5; official
// microsoft/unilm beit2/run_class_finetuning.py and engine_for_finetuning.py at 768a3c8) on the shared loop
// (train/loop.h). Its own parts:
//   model     VisionTransformer with a head (model: preset + overrides; num_classes 0 = the class folders of
//             data.train), initialised from init.weights (train/finetune_init.h: our backbone.safetensors, an
//             official/timm classifier, a VQ-KD encoder) or from scratch; the load report in the log
//   optim     AdamW, layer-wise lr decay with the official layer ids (scale = layer_decay^(depth + 1 - id)),
//             no weight decay for 1-D tensors, biases, cls_token/pos_embed (and the per-block rel-pos tables with
//             optim.weight_decay_on_rel_pos_bias false), warmup from 0 then cosine per step (the loop)
//   data      data.train / data.val are ImageFolders (one folder per class); training view RandomResizedCrop +
//             flip + RandAugment (data layer), then on the device: normalise, RandomErasing, Mixup/CutMix with
//             label smoothing (train/mixup.h) and the soft-target cross-entropy
//   ema       optional model EMA (ema.enabled; train/ema.h) after every applied step, kept in the checkpoints
//             (extra.safetensors)
//   evaluate  top-1 / top-5 and the cross-entropy on data.val after every epoch (and the EMA's, val_ema_*); the
//             best top-1's weights kept in <out_dir>/best/ (model.safetensors + best.json) beside the rolling
//             checkpoints
//   output    <out_dir>/classifier.safetensors (our names = the official fine-tuned names; the class names and
//             the model config in its metadata), optionally classifier_timm.safetensors (timm's beitv2_* layout)
//             and, with the EMA, classifier_ema.safetensors
// Divergences (docs/divergences.md): the non-finite policy of the shared loop; Mixup draws from the data layer's
// Rng (resume-exact); the EMA averages floating-point tensors only and skips skipped steps (D16); the init is
// strict about missing and unknown tensors (finetune_init.h); data.limit keeps an evenly strided subset of the
// (class-sorted) training images, so every class stays in it.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "beitv2/data/dataset.h"
#include "beitv2/models/vit.h"
#include "beitv2/models/vit_config.h"
#include "beitv2/train/config.h"
#include "beitv2/train/loop.h"

namespace beitv2 {

/// `init:` where the classifier's weights come from.
struct FinetuneInitConfig {
  std::string weights;            ///< .safetensors; "" = from scratch
  std::string kind = "auto";      ///< auto | mim | vqkd | classifier (finetune_init.h)
  bool allow_missing = false;     ///< backbone tensors absent from the weights keep their init (official: silent)
  bool allow_unexpected = false;  ///< unknown tensors of the weights are dropped instead of an error

  template <class V>
  void visit(V& v) {
    v("weights", weights);
    v("kind", kind);
    v("allow_missing", allow_missing);
    v("allow_unexpected", allow_unexpected);
  }
  void validate() const;
};

/// `augment:` the fine-tuning augmentation (official defaults).
struct FinetuneAugmentConfig {
  std::string rand_augment = "rand-m9-mstd0.5-inc1";  ///< timm string; "none" = off
  double hflip = 0.5;
  double reprob = 0.25;           ///< RandomErasing probability (0 = off)
  std::string remode = "pixel";   ///< pixel | rand | const
  int64_t recount = 1;
  double crop_pct = 0.875;        ///< evaluation: Resize(size / crop_pct) + CenterCrop(size)

  template <class V>
  void visit(V& v) {
    v("rand_augment", rand_augment);
    v("hflip", hflip);
    v("reprob", reprob);
    v("remode", remode);
    v("recount", recount);
    v("crop_pct", crop_pct);
  }
  void validate() const;
};

/// `mixup:` Mixup / CutMix and label smoothing (official defaults of the recipe; 0/0 turns mixing off).
struct FinetuneMixupConfig {
  double mixup = 0.8;
  double cutmix = 1.0;
  double prob = 1.0;
  double switch_prob = 0.5;
  double smoothing = 0.1;

  template <class V>
  void visit(V& v) {
    v("mixup", mixup);
    v("cutmix", cutmix);
    v("prob", prob);
    v("switch_prob", switch_prob);
    v("smoothing", smoothing);
  }
  void validate() const;
};

/// `optim:` the shared optimiser keys with the fine-tuning defaults, plus layer decay.
struct FinetuneOptimConfig : OptimConfig {
  double layer_decay = 0.9;                  ///< official --layer_decay (1 = off)
  bool weight_decay_on_rel_pos_bias = true;  ///< false = official --disable_weight_decay_on_rel_pos_bias

  FinetuneOptimConfig();
  template <class V>
  void visit(V& v) {
    OptimConfig::visit(v);
    v("layer_decay", layer_decay);
    v("weight_decay_on_rel_pos_bias", weight_decay_on_rel_pos_bias);
  }
  void validate() const;
};
void read_yaml(YamlMap& m, FinetuneOptimConfig& c);

/// `ema:` an exponential moving average of the weights (official --model_ema, timm ModelEma; train/ema.h).
struct FinetuneEmaConfig {
  bool enabled = false;    ///< official default: off
  double decay = 0.9999;   ///< official --model_ema_decay

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("decay", decay);
  }
  void validate() const;
};

/// `output:` what finish() writes besides classifier.safetensors.
struct FinetuneOutputConfig {
  bool timm_layout = false;  ///< also classifier_timm.safetensors (loads strictly in timm's Beit)

  template <class V>
  void visit(V& v) {
    v("timm_layout", timm_layout);
  }
};

/// The whole finetune-beitv2 config file.
struct FinetuneConfig {
  ViTConfig model = default_model();
  FinetuneInitConfig init;
  DataConfig data;
  FinetuneAugmentConfig augment;
  FinetuneMixupConfig mixup;
  FinetuneOptimConfig optim;
  FinetuneEmaConfig ema;
  TrainConfig train;
  FinetuneOutputConfig output;

  /// beitv2_base_patch16_224 with drop path 0.1 (official defaults).
  static ViTConfig default_model();
  template <class V>
  void visit(V& v) {
    v("model", model);
    v("init", init);
    v("data", data);
    v("augment", augment);
    v("mixup", mixup);
    v("optim", optim);
    v("ema", ema);
    v("train", train);
    v("output", output);
  }
  /// Loads `file`, applies "a.b=c" overrides, reads strictly and validates. Throws ConfigError.
  static FinetuneConfig load(const std::string& file, const std::vector<std::string>& overrides = {});
  void validate() const;
  std::string to_yaml() const;
};

struct FinetuneSummary {
  int64_t steps = 0;
  int64_t skipped_nonfinite = 0;
  bool finished = false;
  double first_loss = 0;     ///< loss of the first step of this invocation
  double last_loss = 0;      ///< mean loss of the last log window
  double val_acc1 = -1;      ///< last evaluation, percent (-1 when none ran)
  double val_acc5 = -1;
  double best_acc1 = -1;
  double val_ema_acc1 = -1;  ///< the EMA weights' top-1 at the last evaluation (-1 without ema.enabled)
  std::filesystem::path classifier;  ///< classifier.safetensors when finished
};

/// AdamW groups of the official fine-tuning (optim_factory.get_parameter_groups with LayerDecayValueAssigner):
/// layer id by VisionTransformer::layer_id_for, lr scale layer_decay^(depth + 1 - id); no weight decay for 1-D
/// tensors, biases, cls_token/pos_embed and, without weight_decay_on_rel_pos_bias, the per-block tables.
std::vector<ParamGroup> finetune_param_groups(const VisionTransformer& model, const FinetuneOptimConfig& optim);

/// The trainer itself (for the loop and tests). Builds data, model (with its init) and optimiser; throws
/// ConfigError / std::runtime_error on bad input.
std::unique_ptr<Trainer> make_finetune_trainer(const FinetuneConfig& config);

/// The loop's description of a finetune-beitv2 run.
RunSpec finetune_run_spec(const FinetuneConfig& config);

/// Runs or resumes a fine-tuning. Throws ConfigError / IoError / std::runtime_error with one clear line.
FinetuneSummary finetune(const FinetuneConfig& config, const LoopOptions& options = {});

/// The model config stored in a classifier.safetensors written by finish() (its metadata). Throws
/// std::runtime_error naming the file when it is not one.
ViTConfig classifier_model_config(const std::filesystem::path& weights);

/// One image's prediction.
struct Prediction {
  int64_t index = 0;                  ///< position in the dataset
  std::filesystem::path file;
  std::vector<int64_t> labels;        ///< top-k class indices, best first
  std::vector<std::string> names;     ///< their class names
  std::vector<double> probs;          ///< their softmax probabilities
};

/// Classifies every image under `images` (recursively) with a classifier.safetensors written by finish():
/// the model config and class names come from its metadata; evaluation transform (Resize(size / crop_pct) +
/// CenterCrop). Throws IoError / std::runtime_error naming the file.
std::vector<Prediction> predict(const std::filesystem::path& weights, const std::filesystem::path& images,
                                int64_t topk = 5, double crop_pct = 0.875, int64_t batch_size = 64,
                                const std::string& device = "cpu");
/// The same for every image of a dataset (e.g. a labelled ImageFolder, for a confusion matrix).
std::vector<Prediction> predict(const std::filesystem::path& weights,
                                const std::shared_ptr<const data::ImageDataset>& images, int64_t topk = 5,
                                double crop_pct = 0.875, int64_t batch_size = 64, const std::string& device = "cpu");

}  // namespace beitv2
