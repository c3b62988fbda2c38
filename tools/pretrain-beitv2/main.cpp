// pretrain-beitv2: BEiT v2 masked image modelling with a frozen tokenizer (command line: train/cli.h).
//
//   build/bin/pretrain-beitv2 --config configs/beitv2_tiny_photos.yaml [--set optim.lr=1e-3] [--resume auto]
#include <sstream>

#include "beitv2/train/cli.h"
#include "beitv2/train/pretrain_trainer.h"

int main(int argc, char** argv) {
  return beitv2::trainer_main(
      argc, argv, "pretrain-beitv2", "BEiT v2 masked image modelling pretraining",
      [](const std::string& config, const std::vector<std::string>& overrides, const beitv2::LoopOptions& opts) {
        auto s = beitv2::pretrain_beitv2(beitv2::PretrainConfig::load(config, overrides), opts);
        const auto& w = s.loop.last_window;
        const auto& e = s.loop.last_eval;
        std::ostringstream os;
        os << (s.loop.finished ? "finished" : "stopped") << " at step " << s.loop.steps;
        if (w.contains("loss")) {
          os << ": loss " << s.loop.first_window.value("loss", 0.0) << " (first step) -> " << w.value("loss", 0.0)
             << " (last window), mlm acc " << w.value("mlm_acc_1", 0.0) << " / " << w.value("mlm_acc_2", 0.0);
        }
        if (e.contains("val_mlm_acc_1")) {
          os << ", val mlm acc " << e.value("val_mlm_acc_1", 0.0) << " / " << e.value("val_mlm_acc_2", 0.0);
        }
        if (s.loop.finished) os << "\nbackbone: " << s.backbone.string();
        return os.str();
      });
}
