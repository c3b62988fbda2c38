#pragma once
// train-vqkd: the VQ-KD tokenizer trainer (docs/reference.md §1–§2; official beit2/engine_for_vqkd.py and
// run_vqkd_training.py at 768a3c8) on the shared loop (train/loop.h). Its own parts: teacher targets -> VQKD
// loss, per-epoch evaluation (rec/commitment loss, unused codes, perplexity, plots), usage statistics reset
// every epoch, and `tokenizer.safetensors` (official names, its config in the metadata) at the end.

#include <filesystem>
#include <memory>

#include "beitv2/train/config.h"
#include "beitv2/train/loop.h"

namespace beitv2 {

using VqkdTrainOptions = LoopOptions;

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

/// The trainer itself (for the loop and the benchmark). Builds teacher, data and model; throws on bad input.
/// `train` replaces the batches of data.train (the benchmark feeds a fixed batch).
std::unique_ptr<Trainer> make_vqkd_trainer(const VqkdTrainConfig& config, std::unique_ptr<BatchSource> train = nullptr);

/// The loop's description of a train-vqkd run.
RunSpec vqkd_run_spec(const VqkdTrainConfig& config);

/// Runs or resumes a training. Throws ConfigError / IoError / std::runtime_error with one clear line.
VqkdTrainSummary train_vqkd(const VqkdTrainConfig& config, const VqkdTrainOptions& options = {});

}  // namespace beitv2
