#pragma once
// Crash-safe checkpoints in a run directory (DESIGN.md "Run directory"):
//
//   <run>/checkpoints/step_<N>/{model.safetensors, optimizer.pt, rng.safetensors, trainer.json}
//   <run>/checkpoints/latest            text file naming the newest complete step directory
//
// A checkpoint is written into a hidden temporary directory, every file fsynced, the directory renamed to
// step_<N> and fsynced, and only then is `latest` replaced atomically. A process killed at any point leaves
// `latest` naming a complete checkpoint (or no `latest` at all before the first save). Older step directories
// beyond keep_last are removed after `latest` moves. trainer.json carries a format tag and version; a
// checkpoint of another format or version is rejected with an explanation.

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace beitv2 {

inline constexpr const char* kCheckpointFormat = "beitv2-checkpoint";
inline constexpr int kCheckpointVersion = 1;

class CheckpointManager {
 public:
  /// `run_dir`/checkpoints is created if needed; leftover temporary directories are removed.
  CheckpointManager(std::filesystem::path run_dir, int64_t keep_last);

  /// Saves model (all parameters and buffers), optimizer, the CPU (and CUDA) RNG states and `state` (the
  /// trainer's own counters, stored in trainer.json under "state") as step_<step>.
  std::filesystem::path save(int64_t step, const torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                             const nlohmann::json& state);

  /// The directory `latest` names, if any.
  std::optional<std::filesystem::path> latest() const;

  /// Restores model, optimizer and RNG states from `dir`; returns the trainer state saved with them.
  /// Throws std::runtime_error naming the directory on a missing file, wrong format or version.
  nlohmann::json load(const std::filesystem::path& dir, torch::nn::Module& model, torch::optim::Optimizer& optimizer);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  void prune(const std::filesystem::path& keep);
  std::filesystem::path dir_;
  int64_t keep_last_;
};

}  // namespace beitv2
