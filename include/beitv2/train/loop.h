#pragma once
// The one training loop every trainer plugs into (docs/adding_a_trainer.md).
//
// A trainer is its config, its model(s) and three verbs: `forward_loss(batch)` (its loss and metrics),
// `evaluate(epoch)` (its validation, plots) and `finish()` (its exported artefact). Everything else is written
// once, here:
//
//   set-up        threads, device check, run-directory lock, resume (newest verified checkpoint), config history
//   update step   lr/wd schedule, autocast, backward, grad-norm clip, AdamW, the trainer's after_update (e.g. a
//                 model EMA); a non-finite loss or gradient norm skips the step and restores the model's buffers,
//                 so a skipped step changes nothing
//   log window    averages over the window, img/s, ETA; closed every `log_every` steps or `log_seconds`, and
//                 after the first step; a window whose steps were all skipped says so instead of a number
//   cadence       evaluation every `eval_every` epochs and at the end (also when a stop lands there),
//                 checkpoints every `save_every` steps, after evaluations, on stop and at the end; never inside
//                 a bad streak, never non-finite
//   stop          SIGINT/SIGTERM and `stop_after` finish the step, save and return
//
// Multi-process (train/dist.h, docs/distributed.md): the same loop runs in every process. The batches are
// sharded by rank, gradients are averaged by a dist::GradReducer during backward, the loss, the stop decision
// and the log window's metrics are agreed over all processes, and rank 0 alone evaluates, logs, plots and
// writes checkpoints and outputs; every rank resumes from them (a shared file system is assumed).

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "beitv2/data/loader.h"
#include "beitv2/io/safetensors.h"
#include "beitv2/train/batches.h"
#include "beitv2/train/config.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/optim.h"

namespace beitv2 {

/// What a trainer's forward computes for one batch. Metrics are 0-dim tensors (detached by the loop), so that
/// nothing forces a host sync inside the step; they are averaged over the log window.
struct LossOutput {
  torch::Tensor loss;                                           ///< the scalar to minimise
  std::vector<std::pair<std::string, torch::Tensor>> metrics;   ///< named scalars, in print order
};

/// A trainer's own parts.
class Trainer {
 public:
  virtual ~Trainer() = default;

  /// The module whose parameters and buffers make the checkpoint (and whose buffers a skipped step restores).
  virtual torch::nn::Module& model() = 0;
  /// The AdamW over param_groups() (checkpointed).
  virtual torch::optim::AdamW& optimizer() = 0;
  virtual const std::vector<ParamGroup>& param_groups() const = 0;
  /// Training batches.
  virtual BatchSource& batches() = 0;

  /// Loss and metrics of one training batch (the model in train mode; the loop runs backward and the update).
  virtual LossOutput forward_loss(const data::Batch& batch) = 0;

  /// Called after every optimizer step that was applied, never after a skipped one (e.g. a model EMA update).
  virtual void after_update() {}
  /// Tensors a checkpoint keeps besides the model and the optimizer (e.g. EMA weights), by name: saved as
  /// extra.safetensors when not empty (in the manifest, CRC-checked like the rest).
  virtual TensorMap extra_state() const { return {}; }
  /// Resume: what extra_state() saved ({} when the checkpoint has no extra.safetensors), after the model and
  /// the optimizer are restored.
  virtual void load_extra_state(const TensorMap& tensors) {}

  /// Called before the first step of every epoch (e.g. usage counters restart).
  virtual void start_epoch(int64_t epoch) {}
  /// Validation after epoch `epoch` ends: numbers for metrics.jsonl and the epoch line (plots are the
  /// trainer's to write). The model must be back in train mode on return.
  virtual nlohmann::json evaluate(int64_t epoch) { return nlohmann::json::object(); }
  /// The run reached its end: write the exported artefact(s); returns their paths.
  virtual std::vector<std::filesystem::path> finish(int64_t step) { return {}; }
  /// Files that finish() writes, so that a finished run resumed is a no-op only when they exist.
  virtual std::vector<std::filesystem::path> outputs() const { return {}; }
  /// Lines for the start-up table (model, teacher, data), each "label  text".
  virtual std::vector<std::pair<std::string, std::string>> describe() const { return {}; }
};

/// What one update did.
struct StepStats {
  bool skipped = false;      ///< non-finite loss or gradient norm: nothing changed
  double loss = 0;           ///< the loss (NaN/Inf when skipped for it)
  double grad_norm = 0;      ///< before clipping
};

/// The update step shared by training and the benchmark: set lr/wd, forward_loss under autocast, backward,
/// clip, AdamW, the trainer's after_update(). A non-finite loss or gradient norm skips the step: gradients are
/// dropped and the model's buffers (and frozen parameters) restored, so nothing changes. `metrics` (if given)
/// receives the step's metrics. Multi-process: the loss is averaged over the processes before the decision (so
/// that all skip or none does) and `reducer` averages the gradients during backward.
StepStats train_step(Trainer& trainer, const data::Batch& batch, double lr, double weight_decay,
                     const OptimConfig& optim, const TrainConfig& train,
                     std::vector<std::pair<std::string, torch::Tensor>>* metrics = nullptr,
                     dist::GradReducer* reducer = nullptr);

/// How the loop is invoked (the CLI's flags).
struct LoopOptions {
  /// "" = fresh run (refused if out_dir already holds checkpoints), "auto" = resume from the newest verified
  /// checkpoint if there is one, else a path to a checkpoint directory.
  std::string resume;
  /// Stop (saving a checkpoint) after this many steps in this invocation; 0 = run to the end.
  int64_t stop_after = 0;
  /// Resume even though a run-breaking config key changed.
  bool force_resume = false;
};

/// What a run did.
struct LoopSummary {
  int64_t steps = 0;                 ///< global step reached
  int64_t total = 0;                 ///< configured end
  int64_t skipped_nonfinite = 0;     ///< steps skipped for a non-finite loss or gradient
  bool finished = false;             ///< reached the configured end (else stopped)
  bool already_finished = false;     ///< resumed a finished run: nothing was done
  /// Metrics of the first logged window of this invocation (its first step); {} when no step ran.
  nlohmann::json first_window = nlohmann::json::object();
  nlohmann::json last_window = nlohmann::json::object();  ///< metrics of the last non-empty window
  nlohmann::json last_eval = nlohmann::json::object();    ///< the last evaluate() record
  std::vector<std::filesystem::path> outputs;  ///< finish()'s files
};

/// The resolved config of a run as the loop needs it.
struct RunSpec {
  std::string name;                  ///< the trainer's name for logs ("train-vqkd")
  std::string config_yaml;           ///< the whole resolved config (written to config.yaml, compared on resume)
  const OptimConfig* optim = nullptr;
  const TrainConfig* train = nullptr;
  int64_t batch_per_process = 0;     ///< images per step in each process (x world size = the global batch)
  /// Config keys (dotted prefixes) whose change makes a resumed run a different run: such a resume is refused
  /// unless forced. Changes of other keys are logged.
  std::vector<std::string> resume_breaking_keys = {"model.", "data.train", "data.batch_size", "data.limit",
                                                   "train.seed", "teacher."};
};

/// A Trainer made once the run directory is locked and the resume point known (a factory, so that nothing
/// heavy is built before the bad-input checks).
using TrainerFactory = std::function<std::unique_ptr<Trainer>()>;

/// Runs or resumes a training. Throws ConfigError / IoError / std::runtime_error with one clear line.
LoopSummary run_training(const RunSpec& spec, const TrainerFactory& make_trainer, const LoopOptions& options = {});

/// Seconds → "1h02m" / "3m05s".
std::string format_duration(double seconds);

}  // namespace beitv2
