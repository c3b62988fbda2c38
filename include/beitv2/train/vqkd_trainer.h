#pragma once
// train-vqkd: the VQ-KD tokenizer trainer (SPEC.md §1–§2; official beit2/engine_for_vqkd.py and
// run_vqkd_training.py at 768a3c8). Teacher targets -> VQKD loss -> AdamW step, per-step cosine lr, per-epoch
// evaluation (rec/commitment loss, unused codes, perplexity), usage statistics reset every epoch, crash-safe
// checkpoints, bit-exact resume on CPU, and `tokenizer.safetensors` (official names) at the end.

#include <torch/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "beitv2/train/config.h"

namespace beitv2 {

/// A deterministic source of uint8 image batches: batch k of epoch e is always the same images with the
/// same augmentation, whatever the number of workers or where a run resumed.
class ImageBatches {
 public:
  virtual ~ImageBatches() = default;
  /// Images in the dataset (after decode-error filtering is known only per batch).
  virtual int64_t size() const = 0;
  virtual int64_t batches_per_epoch() const = 0;
  /// Feeds batches first..end of `epoch` to `consume(k, images (B, 3, S, S) uint8)`; stops early when it
  /// returns false.
  virtual void run_epoch(int64_t epoch, int64_t first,
                         const std::function<bool(int64_t, const torch::Tensor&)>& consume) = 0;
};

/// The training view (RandomResizedCrop(size, (min_scale, 1), bicubic) + flip) or, with `train` false, the
/// evaluation view (resize size*256/224 + centre crop) of data.train / data.val.
std::unique_ptr<ImageBatches> make_vqkd_batches(const DataConfig& data, int64_t size, bool train, int64_t seed,
                                                int64_t batch_size, int64_t rank = 0, int64_t world = 1);

struct VqkdTrainOptions {
  /// "" = fresh run (refused if out_dir already holds checkpoints), "auto" = resume from the latest checkpoint
  /// if there is one, else a path to a checkpoint directory.
  std::string resume;
  /// Stop (saving a checkpoint) after this many steps in this invocation; 0 = run to the end.
  int64_t stop_after = 0;
};

struct VqkdTrainSummary {
  int64_t steps = 0;              ///< global step reached
  int64_t skipped_nonfinite = 0;  ///< steps skipped for a non-finite loss
  double first_rec_loss = 0;      ///< rec loss of the first step of this invocation
  double last_rec_loss = 0;       ///< mean rec loss over the last log window
  double val_rec_loss = -1;       ///< last evaluation (-1 when none ran)
  int64_t val_unused_codes = -1;
  bool finished = false;          ///< reached the configured end (else stopped by a signal or stop_after)
  std::filesystem::path tokenizer;  ///< tokenizer.safetensors when finished
};

/// Runs or resumes a training. Throws ConfigError / IoError / std::runtime_error with one clear line.
VqkdTrainSummary train_vqkd(const VqkdTrainConfig& config, const VqkdTrainOptions& options = {});

}  // namespace beitv2
