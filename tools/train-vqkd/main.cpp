// train-vqkd: train (or resume) a VQ-KD tokenizer from a YAML config.
//
//   build/bin/train-vqkd --config configs/vqkd_tiny_photos.yaml [--set optim.lr=1e-4] [--resume auto]
//
// Exit codes: 0 finished or cleanly stopped (SIGINT/SIGTERM, --stop-after), 1 error (one line on stderr),
// 2 bad command line.
#include <CLI/CLI.hpp>

#include <iostream>

#include "beitv2/train/vqkd_trainer.h"

int main(int argc, char** argv) {
  std::string config;
  std::vector<std::string> overrides;
  beitv2::VqkdTrainOptions opts;
  CLI::App app{"beitv2 train-vqkd: train a VQ-KD visual tokenizer"};
  app.add_option("--config", config, "YAML config (see configs/)")->required();
  app.add_option("--set", overrides, "override key.path=value (repeatable)");
  app.add_option("--resume", opts.resume, "auto (latest checkpoint of train.out_dir) or a checkpoint directory");
  app.add_option("--stop-after", opts.stop_after, "stop after this many steps in this run (a checkpoint is saved)");
  app.add_flag("--force-resume", opts.force_resume, "resume even though the model, data or seed changed");
  CLI11_PARSE(app, argc, argv);
  try {
    auto cfg = beitv2::VqkdTrainConfig::load(config, overrides);
    auto s = beitv2::train_vqkd(cfg, opts);
    std::cout << (s.finished ? "finished" : "stopped") << " at step " << s.steps << ": rec loss "
              << s.first_rec_loss << " (first step) -> " << s.last_rec_loss << " (last window)";
    if (s.val_rec_loss >= 0) std::cout << ", val rec loss " << s.val_rec_loss << ", unused codes " << s.val_unused_codes;
    if (s.finished) std::cout << "\ntokenizer: " << s.tokenizer.string();
    std::cout << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "train-vqkd: error: " << e.what() << std::endl;
    return 1;
  }
}
