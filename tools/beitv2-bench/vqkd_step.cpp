// beitv2-bench vqkd-train-step: train-vqkd's own update step (train_step of the shared loop over the VQ-KD
// trainer: teacher forward, tokenizer forward + backward, grad norm, AdamW, the non-finite check), the same
// work as tools/bench_reference.py vqkd-train-step does in PyTorch eager.
//   tiny: vqkd_test_tiny + a vit_test_tiny teacher (32-d targets), 32x32 images
//   base: vqkd_encoder_base_decoder_3x768x12_clip (the recommended recipe's 3-block decoder) + a ViT-B/16
//         teacher (768-d targets), 224x224
#include "steps.h"

#include "beitv2/beitv2.h"
#include "beitv2/train/loop.h"
#include "beitv2/train/vqkd_trainer.h"

namespace beitv2::bench {

/// FLOPs of one VQ-KD training step per image (steps.h's rules): encoder, task layers and decoder trained (3x),
/// the quantizer's distance matmul and the teacher forward only (1x).
double vqkd_step_flops(const VqkdConfig& m, const ViTConfig& teacher) {
  const double p = static_cast<double>(m.encoder.num_patches()), d = static_cast<double>(m.encoder.embed_dim);
  const double dd = static_cast<double>(m.decoder.embed_dim);
  const double trained = vit_forward_flops(m.encoder) + linear_flops(p, d, d) + linear_flops(p, d, m.code_dim) +
                         vit_forward_flops(m.decoder) + linear_flops(p, dd, dd) + linear_flops(p, dd, m.target_dim);
  return 3 * trained + linear_flops(p, m.code_dim, m.n_code) + vit_forward_flops(teacher);
}

nlohmann::json vqkd_train_step(const StepOptions& o) {
  torch::manual_seed(0);
  torch::set_num_threads(o.threads);
  const std::string& size = o.size;
  const int64_t batch = o.batch;
  const bool base = size == "base";
  TORCH_CHECK(base || size == "tiny", "vqkd-train-step: --size must be tiny or base, got '", size, "'");
  VqkdTrainConfig cfg;
  cfg.model = vqkd_preset(base ? "vqkd_encoder_base_decoder_3x768x12_clip" : "vqkd_test_tiny");
  cfg.teacher.kind = "native";
  cfg.teacher.native_model = vit_preset(base ? "vit_base_patch16_224" : "vit_test_tiny");
  cfg.model.target_dim = cfg.teacher.native_model.embed_dim;
  cfg.model.kmeans_init = false;  // random unit codebook, initialised (as the reference side)
  cfg.data.train = "(fixed random batch)";
  cfg.data.batch_size = batch;
  cfg.optim.lr = 1e-4;
  cfg.train.threads = o.threads;
  cfg.train.device = o.device;
  cfg.train.amp = o.amp;
  const double gemm = gemm_rate(o);
  const int64_t s = cfg.model.encoder.img_size;
  data::Batch b;
  b.images = {torch::randint(0, 256, {batch, 3, s, s}, torch::kUInt8)};
  b.indices = torch::arange(batch);
  auto trainer = make_vqkd_trainer(cfg, std::make_unique<FixedBatch>(b));
  const double median = median_seconds(
      [&] {
        const auto st = train_step(*trainer, b, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim, cfg.train);
        TORCH_CHECK(!st.skipped, "vqkd-train-step: a non-finite step");
      },
      o.warmup, o.iters, o.device == "cuda");
  return step_record("vqkd-train-step", o, median, vqkd_step_flops(cfg.model, cfg.teacher.native_model), gemm);
}

}  // namespace beitv2::bench
