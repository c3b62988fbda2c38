// finetune-seg's parts: the poly schedule, the sliding windows against mmseg's (fixture), the ADE20K-layout
// reader's errors, and a tiny training on Fashion-MNIST scenes whose loss falls and whose evaluation runs.
#include <fstream>

#include "beitv2/beitv2.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/train/optim.h"
#include "beitv2/train/seg_trainer.h"
#include "common.h"

namespace beitv2 {
namespace {

// Fashion-MNIST scenes (tools/prepare_fmnist_scenes.py), 32x32, prepared once per machine.
std::filesystem::path scenes() {
  const auto dir = std::filesystem::temp_directory_path() / "beitv2_fmnist_scenes_32";
  if (!std::filesystem::exists(dir / "scenes.json")) {
    const std::string cmd = "python3 " + (test::source_dir() / "tools/prepare_fmnist_scenes.py").string() + " " +
                            dir.string() + " --size 32 --train 96 --val 16 > /dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  return dir;
}

std::string tiny_yaml(const std::filesystem::path& root, const std::filesystem::path& out, int64_t steps) {
  return "model:\n  backbone:\n    preset: vit_test_tiny\n    img_size: 32\n    patch_size: 4\n"
         "    use_abs_pos_emb: false\n    use_rel_pos_bias: true\n  out_indices: [0, 1, 1, 1]\n"
         "  channels: 16\n  aux_channels: 8\n  num_classes: 11\n"
         "init:\n  weights: \"\"\n"
         "data:\n  root: " + root.string() + "\n  img_scale: [128, 32]\n  crop_size: 32\n  batch_size: 8\n  workers: 1\n"
         "eval:\n  stride: 21\n"
         "optim:\n  lr: 3.0e-3\n  warmup_steps: 5\n"
         "train:\n  steps: " + std::to_string(steps) + "\n  log_every: 5\n  eval_every: 100\n  threads: 2\n"
         "  out_dir: " + out.string() + "\n";
}

TEST(Seg, PolyScheduleWarmsUpLinearlyThenFallsLinearlyToTheFloor) {
  const auto lr = poly_schedule(1.0, 0.1, 10, 2, 0.01);
  ASSERT_EQ(lr.size(), 10u);
  EXPECT_NEAR(lr[0], 1.0 * (1 - 0.99), 1e-12);                      // warmup starts at warmup_start (ratio 0.01)
  EXPECT_NEAR(lr[1], (0.9 * 0.9 + 0.1) * (1 - 0.99 * 0.5), 1e-12);  // half way, on top of the poly value
  EXPECT_NEAR(lr[2], 0.9 * 0.8 + 0.1, 1e-12);
  EXPECT_NEAR(lr[9], 0.9 * 0.1 + 0.1, 1e-12);
  for (size_t i = 3; i < lr.size(); ++i) EXPECT_LT(lr[i], lr[i - 1]);
}

TEST(Seg, SlidingWindowsAreMmsegs) {
  const auto f = read_safetensors(test::data_dir() / "golden/seg_slide_windows.safetensors");
  int checked = 0;
  for (const auto& [name, rows] : f.tensors) {  // windows.<H>x<W>: (n, 4) rows (y1, y2, x1, x2)
    const auto hw = name.substr(std::string("windows.").size());
    const int64_t h = std::stoll(hw.substr(0, hw.find('x'))), w = std::stoll(hw.substr(hw.find('x') + 1));
    std::vector<int64_t> got;
    for (const auto& [y1, y2] : slide_windows(h, 512, 341)) {
      for (const auto& [x1, x2] : slide_windows(w, 512, 341)) got.insert(got.end(), {y1, y2, x1, x2});
    }
    EXPECT_TRUE(torch::tensor(got).reshape({-1, 4}).equal(rows)) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

TEST(Seg, AnImageWithoutItsAnnotationIsNamed) {
  test::TempDir dir("seg_bad");
  std::filesystem::create_directories(dir / "images/training");
  std::filesystem::create_directories(dir / "annotations/training");
  std::filesystem::copy_file(scenes() / "images/training/fmnist_scene_000000.png", dir / "images/training/a.png");
  std::ofstream(dir / "c.yaml") << tiny_yaml(dir.path(), dir / "run", 10);
  try {
    make_seg_trainer(SegConfig::load((dir / "c.yaml").string()));
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no annotation"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("a.png"), std::string::npos) << e.what();
  }
}

TEST(Seg, TinyTrainingOnFashionMnistScenesLowersTheLossAndEvaluates) {
  test::TempDir dir("seg_train");
  std::ofstream(dir / "c.yaml") << tiny_yaml(scenes(), dir / "run", 60);
  const auto s = finetune_seg(SegConfig::load((dir / "c.yaml").string()));
  ASSERT_TRUE(s.loop.finished);
  const double first = s.loop.first_window.at("loss_decode"), last = s.loop.last_window.at("loss_decode");
  EXPECT_LT(last, 0.8 * first) << "decode loss " << first << " -> " << last;
  // The background is ~70% of the pixels: after 60 steps at least it is found; mIoU is a percentage.
  EXPECT_GT(s.loop.last_eval.at("aAcc").get<double>(), 60.0);
  EXPECT_GE(s.miou, 0.0);
  EXPECT_LE(s.miou, 100.0);
  EXPECT_TRUE(std::filesystem::exists(s.segmenter));
  // The segmenter's weights carry the official names.
  const auto names = read_safetensors(s.segmenter).tensors;
  for (const char* k : {"backbone.fpn1.0.weight", "backbone.blocks.0.attn.relative_position_bias_table",
                        "decode_head.psp_modules.0.1.conv.weight", "auxiliary_head.conv_seg.weight"}) {
    EXPECT_TRUE(names.count(k)) << k;
  }
}

}  // namespace
}  // namespace beitv2
