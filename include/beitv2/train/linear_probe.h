#pragma once
// linear-probe-beitv2: how linearly separable a frozen backbone's features are (docs/reference.md §5: the
// official repo has no BEiT v2 linear-probe script; the protocol here follows MAE's main_linprobe.py: a
// BatchNorm1d without affine (eps 1e-6) + a linear head initialised N(0, 0.01), LARS (util/lars.py, trust
// coefficient 0.001) with momentum 0.9, no weight decay, lr = base x batch / 256, warmup then cosine per step;
// SGD with momentum as an option; and DINOv2's grid: many heads trained together over features extracted once).
//
// The backbone runs in eval mode over the evaluation view of data.train and data.val (Resize + CenterCrop, no
// augmentation), once; every (block, pooling) feature set is cached in memory, and one head per
// (block, pooling, lr) is trained on the same minibatches. With probe.augment, the training features are
// extracted again every epoch from MAE's training view instead (RandomResizedCrop(size, (data.min_crop_scale, 1))
// + horizontal flip, each image's draw a function of (run.seed, epoch, index)); the validation features stay
// cached. Poolings: "cls" = the [CLS] token, "mean" = the mean of the patch tokens, "pixels" = the normalised
// evaluation view itself, flattened (the raw-pixel baseline: no backbone is run when it is the only pooling, and
// the block does not matter); block -n (n >= 2) = the last n blocks' outputs, each through the final `norm` when
// the backbone has one, pooled and concatenated (DINOv2's n_last_blocks); block -1 = the backbone's output (after the final `norm` for a backbone that has one, as
// BEiT v2's CLS-pretrained MIM backbones do; with mean pooling, "mean" goes through `fc_norm`), block i = the
// output of block i (before any norm). The table (block x pooling x lr -> top-1) is written to the run directory
// as probe_results.tsv, and every head's final top-1 to metrics.jsonl.
// Divergences from MAE's protocol: the cached evaluation view is the default (probe.augment: false), as DINOv2's
// grids do, because re-extracting every epoch costs a backbone forward per image and epoch; the lr, block and
// pooling are a grid scored on data.val (MAE: one lr, the [CLS] token or the mean after fc_norm).

#include <filesystem>
#include <string>
#include <vector>

#include "beitv2/train/finetune_trainer.h"

namespace beitv2 {

/// `probe:` the heads and their training.
struct ProbeConfig {
  std::vector<int64_t> blocks = {-1};          ///< -1 the output; i >= 0 block i; -n the last n blocks concatenated
  std::string poolings = "cls,mean";           ///< comma-separated: "cls" | "mean" | "pixels"
  std::vector<double> lrs = {0.01, 0.03, 0.1, 0.3, 1.0};  ///< base lrs (x batch_size / 256)
  int64_t epochs = 90;
  int64_t warmup_epochs = 10;
  int64_t batch_size = 256;
  double momentum = 0.9;
  double weight_decay = 0.0;
  double crop_pct = 0.875;                     ///< feature extraction view: Resize(size / crop_pct) + CenterCrop
  std::string optimizer = "lars";              ///< lars (MAE) | sgd (momentum, weight decay on every tensor)
  bool augment = false;                        ///< training features from RandomResizedCrop + flip, every epoch

  template <class V>
  void visit(V& v) {
    v("blocks", blocks);
    v("poolings", poolings);
    v("lrs", lrs);
    v("epochs", epochs);
    v("warmup_epochs", warmup_epochs);
    v("batch_size", batch_size);
    v("momentum", momentum);
    v("weight_decay", weight_decay);
    v("crop_pct", crop_pct);
    v("optimizer", optimizer);
    v("augment", augment);
  }
  void validate() const;
};

/// `run:` where and how.
struct ProbeRunConfig {
  std::string out_dir = "runs/linear_probe";
  int64_t seed = 0;
  int64_t threads = 0;          ///< 0 = all cores
  std::string device = "cpu";   ///< cpu | cuda

  template <class V>
  void visit(V& v) {
    v("out_dir", out_dir);
    v("seed", seed);
    v("threads", threads);
    v("device", device);
  }
};

/// The whole linear-probe-beitv2 config file.
struct LinearProbeConfig {
  ViTConfig model = FinetuneConfig::default_model();  ///< the backbone (num_classes is ignored)
  FinetuneInitConfig init;                            ///< its weights ("" = a random backbone)
  DataConfig data;                                    ///< train / val ImageFolders (batch_size: extraction)
  ProbeConfig probe;
  ProbeRunConfig run;

  template <class V>
  void visit(V& v) {
    v("model", model);
    v("init", init);
    v("data", data);
    v("probe", probe);
    v("run", run);
  }
  static LinearProbeConfig load(const std::string& file, const std::vector<std::string>& overrides = {});
  void validate() const;
  std::string to_yaml() const;
};

/// One head's result.
struct ProbeResult {
  int64_t block = -1;
  std::string pooling;
  double lr = 0;       ///< base lr
  double top1 = 0;     ///< percent on data.val
};

/// Extracts the features, trains every head, writes probe_results.tsv and metrics.jsonl; returns the results
/// (best first). Throws ConfigError / std::runtime_error with one clear line.
std::vector<ProbeResult> linear_probe(const LinearProbeConfig& config);

}  // namespace beitv2
