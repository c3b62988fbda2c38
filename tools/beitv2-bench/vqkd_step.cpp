// beitv2-bench vqkd-train-step: one VQ-KD training step (teacher forward, tokenizer forward + backward, AdamW),
// the same work as tools/bench_reference.py vqkd-train-step does in PyTorch eager.
//   tiny: vqkd_test_tiny + a vit_test_tiny teacher (32-d targets), 32x32 images
//   base: vqkd_encoder_base_decoder_1x768x12_dino + a ViT-B/16 teacher (768-d targets, DINO-like), 224x224
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>

#include "beitv2/beitv2.h"
#include "beitv2/train/optim.h"

namespace beitv2::bench {

nlohmann::json vqkd_train_step(const std::string& size, int64_t batch, int threads, int warmup, int iters) {
  torch::manual_seed(0);
  torch::set_num_threads(threads);
  const bool base = size == "base";
  TORCH_CHECK(base || size == "tiny", "vqkd-train-step: --size must be tiny or base, got '", size, "'");
  auto cfg = vqkd_preset(base ? "vqkd_encoder_base_decoder_1x768x12_dino" : "vqkd_test_tiny");
  auto tcfg = vit_preset(base ? "vit_base_patch16_224" : "vit_test_tiny");
  cfg.target_dim = tcfg.embed_dim;
  cfg.kmeans_init = false;  // random unit codebook, initialised (as the reference side)
  VQKD model(cfg);
  model->train();
  VisionTransformer teacher(tcfg);
  teacher->eval();
  auto groups = make_param_groups(*model, 1e-4, model->no_weight_decay());
  auto opt = make_adamw(groups, 1e-4, 0.9, 0.99, 1e-8);
  const int64_t s = cfg.encoder.img_size;
  auto images = torch::randint(0, 256, {batch, 3, s, s}, torch::kUInt8);
  auto step = [&] {
    torch::Tensor targets;
    {
      torch::NoGradGuard ng;
      auto x = data::normalize_images(images, data::kImagenetMean, data::kImagenetStd);
      targets = teacher->forward_patch_tokens(x);
    }
    auto out = model->forward(images, targets);
    opt->zero_grad();
    out.loss.backward();
    opt->step();
  };
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  return {{"bench", "vqkd-train-step"}, {"impl", "beitv2"}, {"model", size},      {"batch", batch},
          {"threads", threads},         {"iters", iters},    {"median_s", median}, {"images_per_s", batch / median},
          {"torch", TORCH_VERSION}};
}

}  // namespace beitv2::bench
