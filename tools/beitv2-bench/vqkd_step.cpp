// beitv2-bench vqkd-train-step: train-vqkd's own update step (train_step of the shared loop over the VQ-KD
// trainer: teacher forward, tokenizer forward + backward, grad norm, AdamW, the non-finite check), the same
// work as tools/bench_reference.py vqkd-train-step does in PyTorch eager.
//   tiny: vqkd_test_tiny + a vit_test_tiny teacher (32-d targets), 32x32 images
//   base: vqkd_encoder_base_decoder_1x768x12_dino + a ViT-B/16 teacher (768-d targets, DINO-like), 224x224
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>

#include "beitv2/beitv2.h"
#include "beitv2/train/loop.h"
#include "beitv2/train/vqkd_trainer.h"

namespace beitv2::bench {
namespace {

// The same uint8 batch, forever.
class FixedBatch : public BatchSource {
 public:
  explicit FixedBatch(data::Batch b) : batch_(std::move(b)) {}
  int64_t size() const override { return batch_.size(); }
  int64_t batches_per_epoch() const override { return 1; }
  void start_epoch(int64_t, int64_t) override {}
  std::optional<data::Batch> next() override { return batch_; }

 private:
  data::Batch batch_;
};

}  // namespace

nlohmann::json vqkd_train_step(const std::string& size, int64_t batch, int threads, int warmup, int iters) {
  torch::manual_seed(0);
  torch::set_num_threads(threads);
  const bool base = size == "base";
  TORCH_CHECK(base || size == "tiny", "vqkd-train-step: --size must be tiny or base, got '", size, "'");
  VqkdTrainConfig cfg;
  cfg.model = vqkd_preset(base ? "vqkd_encoder_base_decoder_1x768x12_dino" : "vqkd_test_tiny");
  cfg.teacher.kind = "native";
  cfg.teacher.native_model = vit_preset(base ? "vit_base_patch16_224" : "vit_test_tiny");
  cfg.model.target_dim = cfg.teacher.native_model.embed_dim;
  cfg.model.kmeans_init = false;  // random unit codebook, initialised (as the reference side)
  cfg.data.train = "(fixed random batch)";
  cfg.data.batch_size = batch;
  cfg.optim.lr = 1e-4;
  cfg.train.threads = threads;
  const int64_t s = cfg.model.encoder.img_size;
  data::Batch b;
  b.images = {torch::randint(0, 256, {batch, 3, s, s}, torch::kUInt8)};
  b.indices = torch::arange(batch);
  auto trainer = make_vqkd_trainer(cfg, std::make_unique<FixedBatch>(b));
  auto step = [&] {
    const auto st = train_step(*trainer, b, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim, cfg.train);
    TORCH_CHECK(!st.skipped, "vqkd-train-step: a non-finite step");
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
