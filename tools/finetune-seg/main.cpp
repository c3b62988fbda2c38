// finetune-seg: UperNet semantic segmentation on a BEiT v2 backbone (train/seg_trainer.h), from a YAML config.
//
//   python3 tools/prepare_fmnist_scenes.py data/fmnist_scenes     # scenes of Fashion-MNIST items (ADE20K layout)
//   build/bin/finetune-seg --config configs/seg_fmnist_scenes.yaml [--set init.weights=...] [--resume auto]
//   build/bin/finetune-seg --config ... --set init.weights=segmenter.safetensors --set eval.only=true
#include <sstream>

#include "beitv2/train/cli.h"
#include "beitv2/train/seg_trainer.h"

int main(int argc, char** argv) {
  return beitv2::trainer_main(argc, argv, "finetune-seg", "UperNet semantic segmentation on a BEiT v2 backbone",
                              [](const std::string& config, const std::vector<std::string>& overrides,
                                 const beitv2::LoopOptions& opts) {
                                const auto s = beitv2::finetune_seg(beitv2::SegConfig::load(config, overrides), opts);
                                std::ostringstream os;
                                if (s.loop.steps == 0 && !s.eval.empty()) {
                                  os << "evaluated: val mIoU " << s.miou << "%, mAcc " << s.eval.value("mAcc", -1.0)
                                     << "%, aAcc " << s.eval.value("aAcc", -1.0) << "%";
                                  return os.str();
                                }
                                os << (s.loop.finished ? "finished" : "stopped") << " at step " << s.loop.steps;
                                if (s.miou >= 0) os << ": val mIoU " << s.miou << "%";
                                if (s.loop.finished) os << "\nsegmenter: " << s.segmenter.string();
                                return os.str();
                              });
}
