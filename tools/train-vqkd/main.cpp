// train-vqkd: train (or resume) a VQ-KD tokenizer from a YAML config (command line: train/cli.h).
//
//   build/bin/train-vqkd --config configs/vqkd_tiny_photos.yaml [--set optim.lr=1e-4] [--resume auto]
#include <sstream>

#include "beitv2/train/cli.h"
#include "beitv2/train/vqkd_trainer.h"

int main(int argc, char** argv) {
  return beitv2::trainer_main(argc, argv, "train-vqkd", "train a VQ-KD visual tokenizer",
                              [](const std::string& config, const std::vector<std::string>& overrides,
                                 const beitv2::LoopOptions& opts) {
                                auto s = beitv2::train_vqkd(beitv2::VqkdTrainConfig::load(config, overrides), opts);
                                std::ostringstream os;
                                os << (s.finished ? "finished" : "stopped") << " at step " << s.steps << ": rec loss "
                                   << s.first_rec_loss << " (first step) -> " << s.last_rec_loss << " (last window)";
                                if (s.val_rec_loss >= 0) {
                                  os << ", val rec loss " << s.val_rec_loss << ", unused codes " << s.val_unused_codes;
                                }
                                if (s.finished) os << "\ntokenizer: " << s.tokenizer.string();
                                return os.str();
                              });
}
