#pragma once
// Crash-safe, verified checkpoints in a run directory (docs/architecture.md "Run directory"):
//
//   <run>/checkpoints/step_<N>/{model.safetensors, optimizer.pt, rng.safetensors, trainer.json}
//                              [extra.safetensors: the trainer's other tensors, e.g. a model EMA]
//   <run>/checkpoints/latest            text file naming the newest complete step directory
//
// A checkpoint is written into a hidden temporary directory, every file fsynced, the directory renamed to
// step_<N> and fsynced, and only then is `latest` replaced atomically. A process killed at any point leaves
// `latest` naming a complete checkpoint (or no `latest` at all before the first save). Older step directories
// beyond keep_last are removed after `latest` moves. trainer.json is the manifest: format tag and version, the
// step, the trainer's state, the run's config and the size and CRC-32 of every other file; a checkpoint whose
// files do not match their manifest is damaged and never loaded. Every write error is an IoError naming the
// file (the optimizer is serialised in memory first, so a full disk cannot abort the process).

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "beitv2/io/safetensors.h"

namespace beitv2 {

inline constexpr const char* kCheckpointFormat = "beitv2-checkpoint";
inline constexpr int kCheckpointVersion = 2;  // 2: manifest with per-file CRC-32 and the config

/// A checkpoint that cannot be used: missing or damaged files, another format or version.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class CheckpointManager {
 public:
  /// `run_dir`/checkpoints is created if needed; leftover temporary directories are removed.
  CheckpointManager(std::filesystem::path run_dir, int64_t keep_last);

  /// Saves model (all parameters and buffers), optimizer, the CPU (and CUDA) RNG states, `state` (the
  /// trainer's own counters, stored in trainer.json under "state") and `config` (the run's resolved YAML) as
  /// step_<step>, and `extra` (when not empty) as extra.safetensors. Refuses (IoError) a model or extra tensor
  /// holding a non-finite floating-point value, naming the tensor.
  std::filesystem::path save(int64_t step, const torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                             const nlohmann::json& state, const std::string& config = "", const TensorMap& extra = {});

  /// The directory `latest` names, if any (it may be damaged: see verify()).
  std::optional<std::filesystem::path> latest() const;

  /// Every step_<N> directory holding a trainer.json, newest first; the one `latest` names comes first.
  std::vector<std::filesystem::path> candidates() const;

  /// Checks `dir`'s manifest (format, version, plausible step) and every file's size and CRC-32; returns the
  /// manifest. Throws CheckpointError naming the directory and the first problem.
  nlohmann::json verify(const std::filesystem::path& dir) const;

  /// The newest checkpoint that verifies (warning about each damaged one skipped), or nullopt when there is
  /// none at all; its manifest goes to `manifest` when given. Throws CheckpointError when checkpoints exist but
  /// none verifies.
  std::optional<std::filesystem::path> newest_verified(nlohmann::json* manifest = nullptr) const;

  /// Restores model, optimizer and RNG states from `dir`; returns the manifest (its "state" is the trainer
  /// state saved with it, "config" the run's config). Verifies `dir` first unless `verified` is the manifest
  /// verify() or newest_verified() already returned for it. `extra` (when given) receives extra.safetensors'
  /// tensors ({} when the checkpoint has none). Throws CheckpointError.
  nlohmann::json load(const std::filesystem::path& dir, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                      const nlohmann::json* verified = nullptr, TensorMap* extra = nullptr);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  void prune(const std::filesystem::path& keep);
  std::filesystem::path dir_;
  int64_t keep_last_;
};

}  // namespace beitv2
