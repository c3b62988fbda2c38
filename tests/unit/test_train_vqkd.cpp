// train-vqkd end to end on a tiny config with real photos and a native (random-weight) teacher: the loss
// falls, resume is bit-exact, SIGKILL never leaves a broken checkpoint, bad configs fail before training.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "beitv2/beitv2.h"
#include "beitv2/train/checkpoint.h"
#include "beitv2/train/finetune_trainer.h"
#include "beitv2/train/linear_probe.h"
#include "beitv2/train/optim.h"
#include "beitv2/train/pipeline.h"
#include "beitv2/train/pretrain_trainer.h"
#include "beitv2/train/seg_trainer.h"
#include "beitv2/train/vqkd_trainer.h"
#include "common.h"

namespace beitv2 {
namespace {

// vqkd_test_tiny against a vit_test_tiny native teacher (32-d targets), 32 photos, batch 8 (4 steps/epoch).
std::string tiny_yaml(const std::filesystem::path& out, int64_t steps, int64_t save_every = 4) {
  return "model:\n  preset: vqkd_test_tiny\n  target_dim: 32\n"
         "teacher:\n  kind: native\n  model:\n    preset: vit_test_tiny\n"
         "data:\n  train: " + test::photos_dir().string() + "\n  val: " + test::photos_dir().string() + "\n"
         "  batch_size: 8\n  workers: 2\n  limit: 32\n  val_batch_size: 32\n"
         "optim:\n  lr: 2.0e-3\n  scale_lr: false\n  warmup_steps: 2\n"
         "train:\n  steps: " + std::to_string(steps) + "\n  log_every: 4\n  save_every: " + std::to_string(save_every) +
         "\n  threads: 1\n  plot_images: 2\n  out_dir: " + out.string() + "\n";
}

VqkdTrainConfig tiny_config(const std::filesystem::path& dir, int64_t steps, int64_t save_every = 4) {
  std::ofstream(dir / "config.yaml") << tiny_yaml(dir / "run", steps, save_every);
  return VqkdTrainConfig::load((dir / "config.yaml").string());
}

TEST(TrainVqkd, ReconstructionLossFallsAndCodesStayInUse) {
  test::TempDir dir("train_fall");
  auto s = train_vqkd(tiny_config(dir.path(), 40));
  ASSERT_TRUE(s.finished);
  // A random teacher's features are still a fixed function of the image: 40 steps cut the cosine loss by well
  // over half (measured 0.86 -> ~0.2 on this config), and the 64-code book stays mostly in use.
  EXPECT_LT(s.last_rec_loss, 0.6 * s.first_rec_loss) << s.first_rec_loss << " -> " << s.last_rec_loss;
  EXPECT_GE(s.val_rec_loss, 0);
  EXPECT_LT(s.val_unused_codes, 48) << "more than 3/4 of the codebook unused";
  EXPECT_TRUE(std::filesystem::exists(s.tokenizer));
  const auto run = dir / "run";
  for (const char* f : {"config.yaml", "log.txt", "metrics.jsonl", "plots/codebook_usage.png", "plots/token_map.png",
                        "plots/curves.png", "plots/history/codebook_usage_epoch_9.png",
                        "plots/history/token_map_epoch_8.png", "checkpoints/latest"}) {
    EXPECT_TRUE(std::filesystem::exists(run / f)) << f;
  }
  EXPECT_FALSE(std::filesystem::exists(run / "plots/history/token_map_epoch_7.png")) << "only 0, 2^k and the last";
  // The tokenizer loads strictly into a fresh model (official names) and tokenises.
  VQKD vq(vqkd_preset("vqkd_test_tiny"));
  EXPECT_THROW(load_weights(*vq, s.tokenizer), std::runtime_error);  // target_dim 16 vs 32: shapes differ
  auto c = vqkd_preset("vqkd_test_tiny");
  c.target_dim = 32;
  VQKD ok(c);
  load_weights(*ok, s.tokenizer);
  ok->eval();
  auto images = torch::randint(0, 256, {4, 3, 32, 32}, torch::kUInt8);
  torch::Tensor ids;
  {
    torch::NoGradGuard ng;
    ids = ok->get_tokens(images);
  }
  EXPECT_EQ(ids.sizes(), torch::IntArrayRef({4, 16}));
  // tokenize-images reads the config stored in the file and tokenises the photos.
  const std::string cmd = std::string(BEITV2_BIN_DIR) + "/tokenize-images --weights " + s.tokenizer.string() +
                          " --images " + test::photos_dir().string() + " --out " + (dir / "t.jsonl").string() +
                          " > /dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  EXPECT_GT(read_file(dir / "t.jsonl").size(), 1000u);
  // Converted back to an official .pth, it loads strictly in the PyTorch rendering and gives the same ids.
  if (const char* py = std::getenv("BEITV2_REF_PYTHON"); py && std::filesystem::exists(py)) {
    write_safetensors(dir / "expect.safetensors", {{"pixels", images}, {"ids", ids}});
    const std::string check = std::string(py) + " " +
                              (test::source_dir() / "tests/reference/check_vqkd_interop.py").string() + " " +
                              s.tokenizer.string() + " " + (dir / "expect.safetensors").string() + " 32 > /dev/null";
    EXPECT_EQ(std::system(check.c_str()), 0) << check;
  }
}

TEST(TrainVqkd, ResumeIsBitIdentical) {
  test::TempDir a("train_straight"), b("train_resumed");
  auto sa = train_vqkd(tiny_config(a.path(), 12, 12));
  auto cb = tiny_config(b.path(), 12, 12);
  auto first = train_vqkd(cb, {.resume = "", .stop_after = 6});  // mid-epoch (4 steps/epoch)
  ASSERT_FALSE(first.finished);
  ASSERT_EQ(first.steps, 6);
  auto second = train_vqkd(cb, {.resume = "auto"});
  ASSERT_TRUE(second.finished);
  ASSERT_TRUE(sa.finished);
  for (const char* f : {"model.safetensors", "rng.safetensors"}) {
    EXPECT_EQ(read_file(a / "run/checkpoints/step_12" / f), read_file(b / "run/checkpoints/step_12" / f)) << f;
  }
  // optimizer.pt's archive layout differs after a load/save round trip; its contents must not.
  auto adam_state = [](const std::filesystem::path& file) {
    auto c = vqkd_preset("vqkd_test_tiny");
    c.target_dim = 32;
    VQKD vq(c);
    auto groups = make_param_groups(*vq, 1e-4, vq->no_weight_decay());
    auto opt = make_adamw(groups, 1e-3, 0.9, 0.99, 1e-8);
    torch::load(*opt, file.string());
    std::vector<torch::Tensor> out;
    for (const auto& g : opt->param_groups()) {
      for (const auto& p : g.params()) {
        auto& st = static_cast<torch::optim::AdamWParamState&>(*opt->state().at(p.unsafeGetTensorImpl()));
        out.push_back(torch::tensor(static_cast<double>(st.step())));
        out.push_back(st.exp_avg());
        out.push_back(st.exp_avg_sq());
      }
    }
    return out;
  };
  auto sa_state = adam_state(a / "run/checkpoints/step_12/optimizer.pt");
  auto sb_state = adam_state(b / "run/checkpoints/step_12/optimizer.pt");
  ASSERT_EQ(sa_state.size(), sb_state.size());
  ASSERT_GT(sa_state.size(), 100u);
  for (size_t i = 0; i < sa_state.size(); ++i) EXPECT_TRUE(torch::equal(sa_state[i], sb_state[i])) << i;
  EXPECT_EQ(read_file(a / "run/tokenizer.safetensors"), read_file(b / "run/tokenizer.safetensors"));
}

TEST(TrainVqkd, NonFiniteLossesAreSkippedThenStopTheRun) {
  // A teacher whose final norm is all zeros gives zero targets, so the cosine loss is 0/0 = NaN every step.
  test::TempDir dir("train_nan");
  auto tcfg = vit_preset("vit_test_tiny");
  VisionTransformer vit(tcfg);
  {
    torch::NoGradGuard ng;
    vit->fc_norm->weight.zero_();
  }
  save_weights(*vit, dir / "zero_teacher.safetensors");
  auto cfg = tiny_config(dir.path(), 20, 1);
  cfg.teacher.path = (dir / "zero_teacher.safetensors").string();
  cfg.train.max_nonfinite = 3;
  try {
    train_vqkd(cfg);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("stopping: 3 consecutive non-finite losses"), std::string::npos) << e.what();
  }
  // No checkpoint was written inside the bad streak.
  EXPECT_FALSE(CheckpointManager(dir / "run", 3).latest().has_value());
}

TEST(TrainVqkd, FreshRunRefusesAnOldRunDir) {
  test::TempDir dir("train_refuse");
  auto cfg = tiny_config(dir.path(), 4, 4);
  train_vqkd(cfg);
  try {
    train_vqkd(cfg);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("already holds checkpoints: pass --resume auto"), std::string::npos);
  }
}

}  // namespace
}  // namespace beitv2

namespace beitv2 {
namespace {

TEST(Configs, EveryShippedConfigParses) {
  int n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(test::source_dir() / "configs")) {
    if (e.path().extension() != ".yaml") continue;
    auto root = load_yaml_file(e.path().string());
    if (root["finetune"] && root["finetune"]["config"]) {  // a beitv2-pipeline file (its stage files exist)
      const auto cwd = std::filesystem::current_path();  // stage paths are relative to the repository root
      std::filesystem::current_path(test::source_dir());
      EXPECT_NO_THROW(PipelineConfig::load(e.path().string())) << e.path();
      std::filesystem::current_path(cwd);
    } else if (root["teacher"]) {  // a train-vqkd config
      auto c = VqkdTrainConfig::load(e.path().string());
      EXPECT_NO_THROW(c.validate()) << e.path();
    } else if (root["tokenizer"]) {  // a pretrain-beitv2 config (its tokenizer file need not exist yet)
      auto c = PretrainConfig::load(e.path().string());
      EXPECT_NO_THROW(c.validate()) << e.path();
    } else if (root["mixup"]) {  // a finetune-beitv2 config
      EXPECT_NO_THROW(FinetuneConfig::load(e.path().string())) << e.path();
    } else if (root["probe"]) {  // a linear-probe-beitv2 config
      EXPECT_NO_THROW(LinearProbeConfig::load(e.path().string())) << e.path();
    } else if (root["model"] && root["model"]["out_indices"]) {  // a finetune-seg config
      EXPECT_NO_THROW(SegConfig::load(e.path().string()).validate()) << e.path();
    } else {  // a model config
      YamlMap top(root, e.path().string(), "");
      auto m = top.child("model");
      EXPECT_NO_THROW(vit_config_from_yaml(m)) << e.path();
      top.finish();
    }
    ++n;
  }
  EXPECT_GE(n, 5);
}

}  // namespace
}  // namespace beitv2

namespace beitv2 {
namespace {

TEST(Optim, CosineScheduleIsTheOfficialOne) {
  // utils.cosine_scheduler(base 1.0, final 0.1, epochs 2, niter 5, warmup_epochs 1): warmup = linspace(0, 1, 5)
  // (endpoint included), then 0.1 + 0.45 (1 + cos(pi i / 5)) for i = 0..4.
  auto v = cosine_schedule(1.0, 0.1, 10, 5);
  ASSERT_EQ(v.size(), 10u);
  const double expect[] = {0.0, 0.25, 0.5, 0.75, 1.0};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(v[i], expect[i], 1e-12) << i;
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(v[5 + i], 0.1 + 0.45 * (1 + std::cos(M_PI * i / 5)), 1e-12) << i;
  EXPECT_THROW(cosine_schedule(1.0, 0.1, 4, 5), c10::Error);
}

TEST(Optim, ParamGroupsFollowTheOfficialDecayRules) {
  auto c = vqkd_preset("vqkd_test_tiny");
  VQKD vq(c);
  auto groups = make_param_groups(*vq, 0.05, vq->no_weight_decay());
  std::set<std::string> decayed, plain;
  for (const auto& g : groups) (g.weight_decay > 0 ? decayed : plain).insert(g.names.begin(), g.names.end());
  EXPECT_TRUE(decayed.count("encoder.blocks.0.attn.qkv.weight"));
  EXPECT_TRUE(decayed.count("encode_task_layer.0.weight"));
  for (const char* n : {"encoder.cls_token", "encoder.pos_embed", "decoder.pos_embed", "encoder.blocks.0.attn.q_bias",
                        "encoder.blocks.0.norm1.weight", "encode_task_layer.0.bias"}) {
    EXPECT_TRUE(plain.count(n)) << n;
  }
  for (const char* n : {"quantize.embedding.weight", "quantize.embedding.cluster_size"}) {  // frozen: not optimised
    EXPECT_FALSE(plain.count(n) || decayed.count(n)) << n;
  }
  // Layer decay (fine-tuning): scale = ld^(num_layers - 1 - id).
  VisionTransformer vit(vit_preset("beitv2_test_tiny"));
  auto lg = make_param_groups(*vit, 0.05, vit->no_weight_decay(),
                              [&](const std::string& n) { return vit->layer_id_for(n); }, 4, 0.5);
  for (const auto& g : lg) {
    const int64_t id = vit->layer_id_for(g.names.front());
    EXPECT_DOUBLE_EQ(g.lr_scale, std::pow(0.5, 3 - id)) << g.names.front();
  }
}

}  // namespace
}  // namespace beitv2
