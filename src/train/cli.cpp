#include "beitv2/train/cli.h"

#include <CLI/CLI.hpp>

#include <iostream>

namespace beitv2 {

int trainer_main(int argc, char** argv, const std::string& name, const std::string& about, const TrainerRun& run) {
  std::string config;
  std::vector<std::string> overrides;
  LoopOptions opts;
  CLI::App app{"beitv2 " + name + ": " + about};
  app.add_option("--config", config, "YAML config (see configs/)")->required();
  app.add_option("--set", overrides, "override key.path=value (repeatable)");
  app.add_option("--resume", opts.resume, "auto (newest verified checkpoint of train.out_dir) or a checkpoint directory");
  app.add_option("--stop-after", opts.stop_after, "stop after this many steps in this run (a checkpoint is saved)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--force-resume", opts.force_resume, "resume even though the model, data or seed changed");
  CLI11_PARSE(app, argc, argv);
  try {
    std::cout << run(config, overrides, opts) << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << name << ": error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace beitv2
