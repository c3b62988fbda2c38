// beitv2-bench mim-train-step: pretrain-beitv2's own update step (train_step of the shared loop over the
// pretraining trainer: the frozen tokenizer's ids, the MIM model's forward with the CLS head, both losses,
// backward, grad norm, AdamW, the non-finite check), the same work as tools/bench_reference.py mim-train-step.
//   tiny: beitv2_test_tiny + a vqkd_test_tiny tokenizer (32x32, 16 patches, 6 masked)
//   base: beitv2_base_patch16_224 + a ViT-B/16 VQ-KD tokenizer (224x224, 196 patches, 75 masked)
#include <filesystem>

#include "steps.h"

#include "beitv2/beitv2.h"
#include "beitv2/data/masking.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/train/loop.h"
#include "beitv2/train/pretrain_trainer.h"

namespace beitv2::bench {

/// FLOPs of one MIM training step per image (steps.h's rules): the backbone, the CLS head's blocks and the lm
/// head(s) on the masked tokens trained (3x); the tokenizer's encoder, task layer and code lookup 1x.
double mim_step_flops(const BeitV2Config& m, const VqkdConfig& tk, int64_t masked) {
  const auto& bb = m.backbone;
  const double d = static_cast<double>(bb.embed_dim);
  const double head_blocks = vit_forward_flops(bb, m.head_layers) - vit_forward_flops(bb, 0);
  const double lm = linear_flops(static_cast<double>(masked), d, static_cast<double>(m.vocab_size)) *
                    (m.has_cls_head() ? 2 : 1);
  const double p = static_cast<double>(tk.encoder.num_patches()), td = static_cast<double>(tk.encoder.embed_dim);
  const double tokenizer = vit_forward_flops(tk.encoder) + linear_flops(p, td, td) + linear_flops(p, td, tk.code_dim) +
                           linear_flops(p, tk.code_dim, tk.n_code);
  return 3 * (vit_forward_flops(bb) + head_blocks + lm) + tokenizer;
}

nlohmann::json mim_train_step(const StepOptions& o) {
  torch::manual_seed(0);
  torch::set_num_threads(o.threads);
  const std::string& size = o.size;
  const int64_t batch = o.batch;
  const bool base = size == "base";
  TORCH_CHECK(base || size == "tiny", "mim-train-step: --size must be tiny or base, got '", size, "'");
  // A random tokenizer of the right geometry (a random unit codebook, initialised, as the reference side).
  VqkdConfig tk = vqkd_preset(base ? "vqkd_encoder_base_decoder_1x768x12_dino" : "vqkd_test_tiny");
  tk.kmeans_init = false;
  const auto tk_file = std::filesystem::temp_directory_path() / ("beitv2_bench_tokenizer_" + size + ".safetensors");
  save_weights(*VQKD(tk), tk_file, {{"format", "beitv2-tokenizer"}, {"config", tk.to_yaml()}});
  PretrainConfig cfg;
  cfg.model = beitv2_preset(base ? "beitv2_base_patch16_224" : "beitv2_test_tiny");
  cfg.model.vocab_size = tk.n_code;
  cfg.tokenizer.path = tk_file.string();
  cfg.data.train = "(fixed random batch)";
  cfg.data.batch_size = batch;
  cfg.mask.num_patches = base ? 75 : 6;
  cfg.mask.min_patches = base ? 16 : 2;
  cfg.train.threads = o.threads;
  cfg.train.device = o.device;
  cfg.train.amp = o.amp;
  const double gemm = gemm_rate(o);
  const int64_t s = cfg.model.backbone.img_size, ts = tk.encoder.img_size;
  data::Batch b;
  b.images = {torch::randint(0, 256, {batch, 3, s, s}, torch::kUInt8),
              torch::randint(0, 256, {batch, 3, ts, ts}, torch::kUInt8)};
  const data::MaskingGenerator gen({cfg.model.backbone.grid_size(), cfg.model.backbone.grid_size(),
                                    cfg.mask.num_patches, cfg.mask.min_patches, -1, 0.3});
  std::vector<torch::Tensor> masks;
  for (int64_t i = 0; i < batch; ++i) {
    data::Rng rng(static_cast<uint64_t>(i));
    masks.push_back(gen(rng).flatten());
  }
  b.masks = torch::stack(masks).to(torch::kBool);
  b.indices = torch::arange(batch);
  auto trainer = make_pretrain_trainer(cfg, std::make_unique<FixedBatch>(b));
  std::filesystem::remove(tk_file);
  const double median = median_seconds(
      [&] {
        const auto st = train_step(*trainer, b, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim, cfg.train);
        TORCH_CHECK(!st.skipped, "mim-train-step: a non-finite step");
      },
      o.warmup, o.iters, o.device == "cuda");
  return step_record("mim-train-step", o, median, mim_step_flops(cfg.model, tk, cfg.mask.num_patches), gemm);
}

}  // namespace beitv2::bench
