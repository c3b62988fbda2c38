// beitv2-pipeline: BEiT v2 end to end (teacher, tokenizer, pretraining, linear probes, fine-tuning, report) from
// one pipeline file; a rerun skips finished stages and resumes an interrupted one (docs/pipeline.md).
//
//   build/bin/beitv2-pipeline --config configs/fashion_mnist/pipeline.yaml [--set seed=1] [--stop-after N]
//
// Exit codes: 0 finished or cleanly stopped (SIGINT/SIGTERM, --stop-after), 1 error (one line on stderr),
// 2 bad command line.
#include <CLI/CLI.hpp>

#include <iostream>

#include "beitv2/train/pipeline.h"

int main(int argc, char** argv) {
  std::string config;
  std::vector<std::string> overrides;
  beitv2::LoopOptions opts;
  CLI::App app{"beitv2 beitv2-pipeline: BEiT v2 end to end, resumable, with a report"};
  app.add_option("--config", config, "pipeline YAML (see configs/fashion_mnist/pipeline.yaml)")->required();
  app.add_option("--set", overrides, "override key.path=value of the pipeline file (repeatable)");
  app.add_option("--stop-after", opts.stop_after, "stop the first stage that trains after this many steps");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto s = beitv2::run_pipeline(beitv2::PipelineConfig::load(config, overrides), opts);
    if (!s.finished) {
      std::cout << "stopped in stage " << s.stopped_in << "; run the same command again to resume" << std::endl;
      return 0;
    }
    std::cout << s.table << "\nreport: " << s.report.string() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "beitv2-pipeline: error: " << e.what() << std::endl;
    return 1;
  }
}
