#pragma once
// pretrain-beitv2: BEiT v2 masked image modelling with the patch-aggregation (CLS) head (docs/reference.md
// §3–§4; official beit2/run_beitv2_pretraining.py and engine_for_pretraining.py at 768a3c8) on the shared loop
// (train/loop.h). Its own parts: a frozen tokenizer labels the masked patches of the tokenizer view; loss =
// CE(main head) + CE(CLS head); per-epoch MIM accuracies on a validation folder with a prediction picture;
// `backbone.safetensors` (official names, its config in the metadata) at the end.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "beitv2/models/beitv2.h"
#include "beitv2/train/config.h"
#include "beitv2/train/loop.h"

namespace beitv2 {

/// The frozen tokenizer that makes the labels.
struct TokenizerConfig {
  std::string path;                      ///< tokenizer.safetensors (train-vqkd) or a converted official one
  std::string preset;                    ///< its registered preset; "" = the config train-vqkd stored in the file
  std::string interpolation = "bicubic"; ///< resize of the tokenizer view (official PRETRAINING.md: bicubic)

  template <class V>
  void visit(V& v) {
    v("path", path);
    v("preset", preset);
    v("interpolation", interpolation);
  }
  void validate() const;
};

/// Block-wise masking (docs/reference.md §3.4; official masking_generator.py).
struct MaskConfig {
  int64_t num_patches = 75;    ///< masked patches per image (official --num_mask_patches)
  int64_t min_patches = 16;    ///< smallest block (--min_mask_patches_per_block)
  int64_t max_patches = -1;    ///< largest block; -1 = num_patches
  double min_aspect = 0.3;     ///< block aspect ratio in [min_aspect, 1/min_aspect]

  template <class V>
  void visit(V& v) {
    v("num_patches", num_patches);
    v("min_patches", min_patches);
    v("max_patches", max_patches);
    v("min_aspect", min_aspect);
  }
};

/// The whole pretrain-beitv2 config file: model, tokenizer, data, mask, optim, train. Defaults are the official
/// base recipe (docs/reference.md §4) where one exists.
struct PretrainConfig {
  BeitV2Config model = beitv2_preset("beitv2_base_patch16_224");
  TokenizerConfig tokenizer;
  DataConfig data = default_data();
  MaskConfig mask;
  OptimConfig optim = default_optim();
  TrainConfig train;

  template <class V>
  void visit(V& v) {
    v("model", model);
    v("tokenizer", tokenizer);
    v("data", data);
    v("mask", mask);
    v("optim", optim);
    v("train", train);
  }
  static DataConfig default_data();    ///< min_crop_scale 0.2, batch 128
  static OptimConfig default_optim();  ///< lr 1.5e-3 unscaled, betas (0.9, 0.999), wd 0.05, clip 3, warmup 10 ep
  /// Loads `file`, applies "a.b=c" overrides, reads strictly and validates. Throws ConfigError.
  static PretrainConfig load(const std::string& file, const std::vector<std::string>& overrides = {});
  void validate() const;
};

struct PretrainSummary {
  LoopSummary loop;
  std::filesystem::path backbone;  ///< backbone.safetensors when finished
};

/// The trainer itself (for the loop and the benchmark). Loads the tokenizer, builds data and model; throws a
/// ConfigError on bad input (e.g. a tokenizer whose grid or vocabulary differs from the model's).
/// `train` replaces the batches of data.train (the benchmark feeds a fixed batch).
std::unique_ptr<Trainer> make_pretrain_trainer(const PretrainConfig& config, std::unique_ptr<BatchSource> train = nullptr);

/// Runs or resumes a pretraining. Throws ConfigError / IoError / std::runtime_error with one clear line.
PretrainSummary pretrain_beitv2(const PretrainConfig& config, const LoopOptions& options = {});

}  // namespace beitv2
