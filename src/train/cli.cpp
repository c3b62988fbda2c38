#include "beitv2/train/cli.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

#include "beitv2/train/dist.h"

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
  std::string backend;
  double timeout = 0;
  app.add_option("--dist-backend", backend, "multi-process backend (= --set train.dist_backend=...)")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}));
  app.add_option("--dist-timeout", timeout, "seconds a collective may wait (= --set train.dist_timeout=...)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (!backend.empty()) overrides.push_back("train.dist_backend=" + backend);
  if (timeout > 0) overrides.push_back("train.dist_timeout=" + std::to_string(timeout));
  try {
    const std::string line = run(config, overrides, opts);
    const bool main = dist::is_main();
    dist::shutdown();
    if (main) std::cout << line << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << name << ": error: " << e.what() << std::endl;
    // A process group whose peer is lost cannot be torn down cleanly (its threads may wait on the peer): leave
    // at once, the files (checkpoints are atomic, logs flushed) are complete.
    if (dist::active()) std::_Exit(1);
    return 1;
  }
}

}  // namespace beitv2
