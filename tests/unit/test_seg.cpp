// finetune-seg's parts: the poly schedule, the sliding windows against mmseg's (fixture), the readers (ADE20K
// layout, image + mask folders, label maps with an ignore index) and their errors, and a tiny training on
// Fashion-MNIST scenes whose loss falls and whose evaluation runs.
#include <fstream>
#include <iostream>

#include <opencv2/imgcodecs.hpp>

#include "beitv2/beitv2.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/train/optim.h"
#include "beitv2/train/seg_trainer.h"
#include "common.h"

namespace beitv2 {
namespace {

std::filesystem::path scenes() { return test::fmnist_scenes_32(); }

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

// SyncBatchNorm with a sum over one process is BatchNorm2d: output, input and parameter gradients, running
// statistics (torch's own kernel on one side, the SyncBN formulas on the other; fp32 rounding only). With a
// sum that doubles (two identical processes), the statistics are unchanged and the input gradient is the same:
// each process's share of the global batch.
TEST(Seg, SyncBatchNormOverOneProcessIsBatchNorm) {
  torch::manual_seed(3);
  const auto x = torch::randn({3, 5, 4, 6}) * 2 + 1, dy = torch::randn({3, 5, 4, 6});
  for (double copies : {1.0, 2.0}) {
    torch::nn::BatchNorm2d bn(5);
    nn::SyncBatchNorm sync(5);
    {
      torch::NoGradGuard ng;
      bn->weight.uniform_(0.5, 1.5), bn->bias.uniform_(-1, 1);
      sync->weight.copy_(bn->weight), sync->bias.copy_(bn->bias);
    }
    nn::set_batch_norm_sync([copies](torch::Tensor& t) { t.mul_(copies); });
    auto xa = x.clone().requires_grad_(), xb = x.clone().requires_grad_();
    const auto ya = bn->forward(xa), yb = sync->forward(xb);
    (ya * dy).sum().backward();
    (yb * dy).sum().backward();
    nn::set_batch_norm_sync(nullptr);
    EXPECT_TRUE(test::close(yb, ya, 1e-5, 1e-5)) << copies;
    EXPECT_TRUE(test::close(xb.grad(), xa.grad(), 1e-5, 1e-4)) << copies;
    EXPECT_TRUE(test::close(sync->weight.grad(), bn->weight.grad(), 1e-4, 1e-5)) << copies;
    EXPECT_TRUE(test::close(sync->bias.grad(), bn->bias.grad(), 1e-4, 1e-5)) << copies;
    EXPECT_TRUE(test::close(sync->running_mean, bn->running_mean, 1e-6, 1e-5)) << copies;
    // Two copies: the unbiased correction counts the global batch, n / (n - 1) with n = 2 x 72.
    const double n = 72 * copies, correction = (n / (n - 1)) / (72.0 / 71.0);
    EXPECT_TRUE(test::close(sync->running_var, 0.9 + (bn->running_var - 0.9) * correction, 1e-6, 1e-5)) << copies;
    EXPECT_EQ(sync->num_batches_tracked.item<int64_t>(), 1);
  }
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
    EXPECT_NE(std::string(e.what()).find("no label map"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("a.png"), std::string::npos) << e.what();
  }
}

// A label map: reduce_zero_label, then the ignore index -> 255; a value that is no class names the file.
TEST(Seg, LabelMapsMapTheIgnoreIndexAndRejectValuesThatAreNoClass) {
  test::TempDir dir("seg_labels");
  cv::Mat m(2, 3, CV_8U);
  m.at<uint8_t>(0, 0) = 0, m.at<uint8_t>(0, 1) = 1, m.at<uint8_t>(0, 2) = 3;
  m.at<uint8_t>(1, 0) = 7, m.at<uint8_t>(1, 1) = 255, m.at<uint8_t>(1, 2) = 2;
  ASSERT_TRUE(cv::imwrite((dir / "m.png").string(), m));
  SegDataConfig d;
  d.reduce_zero_label = false;
  d.ignore_index = 7;
  auto got = read_seg_label(dir / "m.png", d, 4);  // 255 is ignore as well (the label of padding)
  EXPECT_EQ(std::vector<uint8_t>(got.datastart, got.dataend), (std::vector<uint8_t>{0, 1, 3, 255, 255, 2}));
  d.reduce_zero_label = true;
  d.ignore_index = 255;
  got = read_seg_label(dir / "m.png", d, 7);
  EXPECT_EQ(std::vector<uint8_t>(got.datastart, got.dataend), (std::vector<uint8_t>{255, 0, 2, 6, 255, 1}));
  try {
    read_seg_label(dir / "m.png", d, 6);  // 7 - 1 = 6 is not one of 6 classes
    FAIL() << "no error";
  } catch (const data::DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find("m.png: label 6 is not a class"), std::string::npos) << e.what();
  }
}

// The generic layout: any image folder and mask folder, masks with their own ignore value.
TEST(Seg, FoldersLayoutTrainsAndEvaluates) {
  test::TempDir dir("seg_folders");
  for (const char* split : {"train", "val"}) {
    std::filesystem::create_directories(dir / split / "img");
    std::filesystem::create_directories(dir / split / "mask");
    for (int i = 0; i < 8; ++i) {
      const auto stem = "fmnist_scene_" + std::string(5, '0') + std::to_string(i);
      const auto src = scenes() / (std::string(split) == "train" ? "images/training/" : "images/validation/");
      std::filesystem::copy_file(src / (stem + ".png"), dir / split / "img" / (stem + ".png"));
      // ADE20K values (0 ignore, 1 background, k + 2 items) rewritten as 0..10 with ignore 200.
      cv::Mat lab = cv::imread((scenes() / (std::string(split) == "train" ? "annotations/training/" : "annotations/validation/") /
                                (stem + ".png")).string(), cv::IMREAD_UNCHANGED);
      cv::Mat out = lab - 1;
      out.setTo(200, lab == 0);
      cv::imwrite((dir / split / "mask" / (stem + ".png")).string(), out);
    }
  }
  std::string yaml = tiny_yaml(dir.path(), dir / "run", 3);
  const std::string root_line = "  root: " + dir.path().string() + "\n";
  yaml.replace(yaml.find(root_line), root_line.size(),
               "  layout: folders\n  train_images: " + (dir / "train/img").string() + "\n  train_masks: " +
                   (dir / "train/mask").string() + "\n  val_images: " + (dir / "val/img").string() +
                   "\n  val_masks: " + (dir / "val/mask").string() + "\n  reduce_zero_label: false\n  ignore_index: 200\n");
  std::ofstream(dir / "c.yaml") << yaml;
  const auto s = finetune_seg(SegConfig::load((dir / "c.yaml").string()));
  ASSERT_TRUE(s.loop.finished);
  EXPECT_GE(s.miou, 0.0);
  EXPECT_LE(s.miou, 100.0);
  // A folders config without its mask folder is refused by name.
  try {
    SegConfig::load((dir / "c.yaml").string(), {"data.val_masks=\"\""}).validate();
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("data.val_masks"), std::string::npos) << e.what();
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
  // No final norm (the official segmentation backbone has none).
  for (const auto& [k, v] : names) EXPECT_TRUE(k.find("norm.") == std::string::npos || k.find("norm1") != std::string::npos ||
                                               k.find("norm2") != std::string::npos) << k;
  // The whole segmenter, in the official layout (with the official relative_position_index buffers), loads
  // strictly and evaluates to the run's last evaluation.
  auto official = names;
  official["backbone.blocks.0.attn.relative_position_index"] = torch::zeros({65, 65}, torch::kLong);  // not trusted
  write_safetensors(dir / "official.safetensors", official);
  auto cfg = SegConfig::load((dir / "c.yaml").string(), {"init.weights=" + (dir / "official.safetensors").string(),
                                                          "eval.only=true", "train.out_dir=" + (dir / "eval").string()});
  const auto e = finetune_seg(cfg);
  EXPECT_EQ(e.loop.steps, 0);
  EXPECT_DOUBLE_EQ(e.miou, s.miou);
  EXPECT_TRUE(std::filesystem::exists(dir / "eval/plots/segmentation.png"));
  // Whole-image inference of these 32x32 scenes is the one 32x32 window of slide inference.
  const auto w = finetune_seg(SegConfig::load((dir / "c.yaml").string(),
                                              {"init.weights=" + (dir / "official.safetensors").string(), "eval.only=true",
                                               "eval.mode=whole", "train.out_dir=" + (dir / "eval_whole").string()}));
  EXPECT_DOUBLE_EQ(w.miou, s.miou);
  // Images resized beyond the backbone's input cannot be evaluated whole: refused before any work.
  try {
    finetune_seg(SegConfig::load((dir / "c.yaml").string(), {"eval.mode=whole", "data.img_scale=[128,64]",
                                                             "train.out_dir=" + (dir / "too_big").string()}));
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("eval.mode"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("64x64 after data.img_scale"), std::string::npos) << e.what();
  }
  // The same weights as an official mmseg checkpoint ({'meta', 'state_dict'} in a .pth, as mmcv saves it)
  // through tools/convert_checkpoint.py.
  if (const auto py = test::build_python(); !py.empty()) {
    const std::string make = py + " -c \"import torch; from safetensors.torch import load_file; "
                             "torch.save({'meta': {'mmseg_version': '0.11.0', 'iter': 160000}, 'state_dict': load_file('" +
                             (dir / "official.safetensors").string() + "')}, '" + (dir / "ftade20k.pth").string() + "')\"";
    ASSERT_EQ(std::system(make.c_str()), 0) << make;
    const std::string convert = py + " " + (test::source_dir() / "tools/convert_checkpoint.py").string() + " " +
                                (dir / "ftade20k.pth").string() + " " + (dir / "converted.safetensors").string() + " > /dev/null";
    ASSERT_EQ(std::system(convert.c_str()), 0) << convert;
    const auto c = finetune_seg(SegConfig::load((dir / "c.yaml").string(), {"init.weights=" + (dir / "converted.safetensors").string(),
                                                                            "eval.only=true", "train.out_dir=" + (dir / "eval2").string()}));
    EXPECT_DOUBLE_EQ(c.miou, s.miou);
  }
  // A tensor the segmenter does not have is named.
  official.emplace("decode_head.extra.weight", torch::zeros({1}));
  write_safetensors(dir / "extra.safetensors", official);
  EXPECT_THROW(
      {
        try {
          finetune_seg(SegConfig::load((dir / "c.yaml").string(), {"init.weights=" + (dir / "extra.safetensors").string(),
                                                                   "eval.only=true"}));
        } catch (const std::exception& err) {
          EXPECT_NE(std::string(err.what()).find("decode_head.extra.weight"), std::string::npos) << err.what();
          throw;
        }
      },
      std::exception);
}

// The point at a small size: the main job's pretrained backbone (a committed copy:
// tests/reference/gen_seg_backbone_fixture.py) carries more of the task than a random one. Single-item scenes,
// the backbone's pretraining context, as configs/seg_fmnist_scenes.yaml but smaller (800 scenes, 600 steps),
// with the backbone frozen: at this size full fine-tuning is seed-dependent (README "Segmentation"), while the
// frozen features show the difference every time. Measured 2026-11-29 at this size: 14.25% vs 9.57% mIoU; the
// bound (2 points) leaves room for thread counts and library versions. A backbone that failed to load, or
// loaded as random, fails it.
TEST(Seg, PretrainedBackboneBeatsARandomOneOnSingleItemScenesFrozen) {
  const auto data = test::fmnist_scenes("beitv2_fmnist_scenes_single_32",
                                        "--style plain --size 32 --items 1 1 --scale 0.75 0.95 --train 800 --val 100");
  ASSERT_TRUE(std::filesystem::exists(data / "scenes.json"));
  test::TempDir dir("seg_margin");
  auto run = [&](const std::string& weights, const std::string& name) {
    auto c = SegConfig::load((test::source_dir() / "configs/seg_fmnist_scenes.yaml").string(),
                             {"data.root=" + data.string(), "init.weights=" + weights, "train.steps=600",
                              "model.freeze_backbone=true", "train.threads=1",
                              "train.eval_every=1000", "train.log_every=100", "train.save_every=1000",
                              "train.plot_images=0", "data.workers=1", "train.out_dir=" + (dir / name).string()});
    const auto s = finetune_seg(c);
    EXPECT_TRUE(s.loop.finished);
    return s.miou;
  };
  const double pretrained = run((test::data_dir() / "pretrained/fmnist_beitv2_backbone.safetensors").string(), "b");
  const double random = run("\"\"", "r");
  std::cout << "mIoU from the pretrained backbone " << pretrained << "%, from a random one " << random << "%\n";
  EXPECT_GT(pretrained, random + 2.0);
  // Frozen means frozen: the ViT's weights are still the fixture's.
  const auto trained = read_safetensors(dir / "b/segmenter.safetensors").tensors;
  const auto start = read_safetensors(test::data_dir() / "pretrained/fmnist_beitv2_backbone.safetensors").tensors;
  EXPECT_TRUE(torch::equal(trained.at("backbone.blocks.3.mlp.fc2.weight"), start.at("blocks.3.mlp.fc2.weight")));
  EXPECT_TRUE(torch::equal(trained.at("backbone.patch_embed.proj.weight"), start.at("patch_embed.proj.weight")));
}

}  // namespace
}  // namespace beitv2
