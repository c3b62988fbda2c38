#pragma once
// beitv2-pipeline: BEiT v2 end to end, as the paper tells it, in one resumable command (docs/pipeline.md).
//
//   teacher    finetune-beitv2 from scratch: a supervised ViT standing in for CLIP (the paper's teacher; with
//              CLIP weights exported by tools/export_teacher.py the tokenizer stage takes teacher.kind
//              torchscript instead and the rest is unchanged)
//   tokenizer  train-vqkd against that teacher (a native teacher: its classifier.safetensors)
//   pretrain   pretrain-beitv2 on the tokenizer's ids (CLS head on)
//   probes     linear-probe-beitv2 of (a) a random backbone, (b) the BEiT v2 backbone, (e) the teacher and
//              (f) the raw pixels
//   finetunes  finetune-beitv2 (c) from scratch and (d) from the BEiT v2 backbone, with the same budget
//   report     <out_dir>/report.md: the table and the figures
//
// Each stage is an ordinary config file of its tool (runnable on its own); the pipeline file names them and
// wires them together (output paths, the teacher's model, the seed, the data folders). A stage whose output file
// exists is done; a stage interrupted (signal, --stop-after) resumes from its newest checkpoint on the next run.

#include <filesystem>
#include <string>
#include <vector>

#include "beitv2/core/config_yaml.h"
#include "beitv2/train/loop.h"

namespace beitv2 {

/// One stage: its tool's config file and overrides ("a.b=c") applied before the pipeline's own wiring.
struct StageConfig {
  std::string config;
  std::vector<std::string> set;

  template <class V>
  void visit(V& v) {
    v("config", config);
    v("set", set);
  }
};

/// The pipeline file.
struct PipelineConfig {
  std::string out_dir = "runs/pipeline";
  int64_t seed = 0;          ///< every stage's seed
  std::string train_data;    ///< every stage's data.train ("" = each stage file's own)
  std::string val_data;      ///< every stage's data.val
  StageConfig teacher, tokenizer, pretrain, probe, finetune;

  template <class V>
  void visit(V& v) {
    v("out_dir", out_dir);
    v("seed", seed);
    v("train_data", train_data);
    v("val_data", val_data);
    v("teacher", teacher);
    v("tokenizer", tokenizer);
    v("pretrain", pretrain);
    v("probe", probe);
    v("finetune", finetune);
  }
  /// Loads `file`, applies "a.b=c" overrides, reads strictly and validates. Throws ConfigError.
  static PipelineConfig load(const std::string& file, const std::vector<std::string>& overrides = {});
  void validate() const;
  std::string to_yaml() const;
};

struct PipelineSummary {
  bool finished = false;          ///< every stage done and the report written
  std::string stopped_in;         ///< the stage a signal or stop_after interrupted ("" when finished)
  std::filesystem::path report;   ///< report.md when finished
  std::string table;              ///< the results table (markdown), as in the report
};

/// Runs the stages not yet done, then writes the report. `options.stop_after` applies to the first trainer that
/// runs (the loop stops it after that many steps, with a checkpoint). Throws ConfigError / IoError /
/// std::runtime_error with one clear line naming the stage.
PipelineSummary run_pipeline(const PipelineConfig& config, const LoopOptions& options = {});

}  // namespace beitv2
