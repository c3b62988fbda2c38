// finetune-beitv2: fine-tune (or resume) a BEiT v2 classifier from a YAML config, or classify a folder of images
// with the classifier.safetensors a run wrote.
//
//   build/bin/finetune-beitv2 --config configs/finetune_tiny_fashion_mnist.yaml [--set optim.lr=1e-3] [--resume auto]
//   build/bin/finetune-beitv2 --predict runs/ft/classifier.safetensors --images DIR [--top 5] [--out preds.jsonl]
//
// Exit codes: 0 finished or cleanly stopped (SIGINT/SIGTERM, --stop-after), 1 error (one line on stderr),
// 2 bad command line.
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>

#include "beitv2/train/finetune_trainer.h"

int main(int argc, char** argv) {
  std::string config, weights, images, out;
  std::vector<std::string> overrides;
  int64_t top = 5;
  double crop_pct = 0.875;
  beitv2::LoopOptions opts;
  CLI::App app{"beitv2 finetune-beitv2: fine-tune a BEiT v2 backbone for image classification"};
  auto* cfg_opt = app.add_option("--config", config, "YAML config (see configs/finetune_*.yaml)");
  app.add_option("--set", overrides, "override key.path=value (repeatable)");
  app.add_option("--resume", opts.resume, "auto (latest checkpoint of train.out_dir) or a checkpoint directory");
  app.add_option("--stop-after", opts.stop_after, "stop after this many steps in this run (a checkpoint is saved)");
  app.add_flag("--force-resume", opts.force_resume, "resume even though the model, data or seed changed");
  auto* pred_opt = app.add_option("--predict", weights, "classify --images with this classifier.safetensors");
  app.add_option("--images", images, "folder of images to classify (with --predict)");
  app.add_option("--top", top, "classes per image (with --predict)");
  app.add_option("--crop-pct", crop_pct, "evaluation crop fraction (with --predict)");
  app.add_option("--out", out, "write predictions as JSON lines here (with --predict; default stdout)");
  cfg_opt->excludes(pred_opt);
  CLI11_PARSE(app, argc, argv);
  if (config.empty() && weights.empty()) {
    std::cerr << "finetune-beitv2: give --config (train) or --predict with --images" << std::endl;
    return 2;
  }
  try {
    if (!weights.empty()) {
      if (images.empty()) {
        std::cerr << "finetune-beitv2: --predict needs --images" << std::endl;
        return 2;
      }
      std::ofstream file;
      if (!out.empty()) file.open(out);
      std::ostream& os = out.empty() ? std::cout : file;
      for (const auto& p : beitv2::predict(weights, images, top, crop_pct)) {
        os << nlohmann::json{{"file", p.file.string()}, {"labels", p.labels}, {"classes", p.names}, {"probs", p.probs}}
                  .dump()
           << "\n";
      }
      return 0;
    }
    auto cfg = beitv2::FinetuneConfig::load(config, overrides);
    auto s = beitv2::finetune(cfg, opts);
    std::cout << (s.finished ? "finished" : "stopped") << " at step " << s.steps << ": loss " << s.first_loss
              << " (first step) -> " << s.last_loss << " (last window)";
    if (s.val_acc1 >= 0) std::cout << ", val top-1 " << s.val_acc1 << "% top-5 " << s.val_acc5 << "% (best " << s.best_acc1 << "%)";
    if (s.finished) std::cout << "\nclassifier: " << s.classifier.string();
    std::cout << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "finetune-beitv2: error: " << e.what() << std::endl;
    return 1;
  }
}
