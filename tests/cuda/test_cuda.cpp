// The CUDA path against the CPU one, on the same weights and inputs (scripts/gpu_check.sh runs these on a GPU
// machine; without CUDA every test skips). bf16 autocast on CUDA vs fp32 on CPU: bf16 keeps 8 bits of
// mantissa (relative rounding 2^-9 = 0.2% per operation), so outputs agree to about 1% after a few blocks; the
// quantizer runs in fp32 with autocast off, so its ids and codebook agree to fp32 rounding.
#include "beitv2/beitv2.h"
#include "beitv2/core/autocast.h"
#include "beitv2/data/masking.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/train/loop.h"
#include "beitv2/train/pretrain_trainer.h"
#include "beitv2/train/vqkd_trainer.h"
#include "common.h"

#include <cstdlib>

namespace beitv2 {
namespace {

// The device under test: CUDA when there is one; with BEITV2_CUDA_DRY_RUN=1 and no CUDA, the CPU (the same
// comparisons then run CPU against CPU: scripts/gpu_check.sh --cpu-dry-run checks the tests' plumbing).
std::string device_name() {
  if (torch::cuda::is_available()) return "cuda";
  const char* dry = std::getenv("BEITV2_CUDA_DRY_RUN");
  return dry && std::string(dry) == "1" ? "cpu" : "";
}
torch::Device device() { return device_name() == "cuda" ? torch::kCUDA : torch::kCPU; }

#define SKIP_WITHOUT_CUDA() \
  if (device_name().empty()) GTEST_SKIP() << "no CUDA device (this LibTorch: " << TORCH_VERSION << ")"

// Cosine similarity of two tensors as flat vectors.
double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.detach().cpu().to(torch::kDouble).flatten(), y = b.detach().cpu().to(torch::kDouble).flatten();
  return (x.dot(y) / (x.norm() * y.norm())).item<double>();
}

TEST(Cuda, VitForwardInBf16MatchesCpuFp32) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(0);
  auto cfg = vit_preset("vit_small_patch16_224");
  cfg.depth = 4;
  VisionTransformer vit(cfg);
  vit->eval();
  auto x = torch::randn({2, 3, 224, 224});
  torch::NoGradGuard ng;
  auto cpu = vit->forward_features(x);
  vit->to(device());
  torch::Tensor gpu;
  {
    AutocastScope amp(true, /*cuda=*/true);
    gpu = vit->forward_features(x.to(device()));
  }
  EXPECT_EQ(gpu.scalar_type(), torch::kFloat32) << "the final norm runs in fp32 under autocast";
  EXPECT_GT(cosine(gpu, cpu), 0.999);
  EXPECT_TRUE(test::close(gpu.cpu(), cpu, 0.1, 0.05));
}

TEST(Cuda, QuantizerInFp32GivesTheCpuIdsAndCodebook) {
  SKIP_WITHOUT_CUDA();
  const auto options = nn::NormEMAVectorQuantizerOptions(512, 32).kmeans_init(false);
  torch::manual_seed(0);
  nn::NormEMAVectorQuantizer q(options);
  torch::manual_seed(0);
  nn::NormEMAVectorQuantizer g(options);
  g->to(device());
  auto z = torch::randn({4, 32, 14, 14});
  const auto a = q->forward(z);
  nn::QuantizerOutput b;
  {
    AutocastScope amp(true, /*cuda=*/true);  // the quantizer turns autocast off itself
    b = g->forward(z.to(device()));
  }
  EXPECT_GE(a.indices.eq(b.indices.cpu()).to(torch::kDouble).mean().item<double>(), 0.999);
  EXPECT_TRUE(test::close(g->embedding->weight.cpu(), q->embedding->weight, 1e-5, 1e-5));
}

// One train_step of `make` on CPU fp32 and on CUDA bf16 from the same initial weights: the losses agree to
// bf16 accuracy and so do the updated weights (one AdamW step moves each by about lr).
template <class Config>
void expect_step_matches(Config cpu_cfg, std::unique_ptr<Trainer> (*make)(const Config&, std::unique_ptr<BatchSource>),
                         const data::Batch& batch) {
  Config gpu_cfg = cpu_cfg;
  gpu_cfg.train.device = device_name();
  gpu_cfg.train.amp = "bf16";
  auto cpu = make(cpu_cfg, std::make_unique<FixedBatch>(batch));
  auto gpu = make(gpu_cfg, std::make_unique<FixedBatch>(batch));
  const auto sc = train_step(*cpu, batch, 1e-4, 0.05, cpu_cfg.optim, cpu_cfg.train);
  const auto sg = train_step(*gpu, batch, 1e-4, 0.05, gpu_cfg.optim, gpu_cfg.train);
  ASSERT_FALSE(sc.skipped);
  ASSERT_FALSE(sg.skipped);
  EXPECT_NEAR(sg.loss, sc.loss, 0.02 * std::abs(sc.loss) + 1e-3);
  EXPECT_NEAR(sg.grad_norm, sc.grad_norm, 0.05 * sc.grad_norm);
  auto pc = cpu->model().named_parameters(true), pg = gpu->model().named_parameters(true);
  for (const auto& item : pc) {
    EXPECT_TRUE(test::close(pg[item.key()].cpu(), item.value(), 2e-3, 1e-2)) << item.key();
  }
}

TEST(Cuda, VqkdTrainStepInBf16MatchesCpuFp32) {
  SKIP_WITHOUT_CUDA();
  VqkdTrainConfig cfg;
  cfg.model = vqkd_preset("vqkd_test_tiny");
  cfg.model.kmeans_init = false;
  cfg.teacher.kind = "native";
  cfg.teacher.native_model = vit_preset("vit_test_tiny");
  cfg.model.target_dim = cfg.teacher.native_model.embed_dim;
  cfg.data.train = "(fixed batch)";
  data::Batch b;
  b.images = {torch::randint(0, 256, {8, 3, 32, 32}, torch::kUInt8)};
  b.indices = torch::arange(8);
  expect_step_matches<VqkdTrainConfig>(cfg, &make_vqkd_trainer, b);
}

TEST(Cuda, MimTrainStepInBf16MatchesCpuFp32) {
  SKIP_WITHOUT_CUDA();
  test::TempDir dir("cuda_mim");
  VqkdConfig tk = vqkd_preset("vqkd_test_tiny");
  tk.kmeans_init = false;
  torch::manual_seed(0);
  save_weights(*VQKD(tk), dir / "tokenizer.safetensors", {{"format", "beitv2-tokenizer"}, {"config", tk.to_yaml()}});
  PretrainConfig cfg;
  cfg.model = beitv2_preset("beitv2_test_tiny");
  cfg.tokenizer.path = (dir / "tokenizer.safetensors").string();
  cfg.data.train = "(fixed batch)";
  cfg.mask.num_patches = 6;
  cfg.mask.min_patches = 2;
  data::Batch b;
  b.images = {torch::randint(0, 256, {8, 3, 32, 32}, torch::kUInt8), torch::randint(0, 256, {8, 3, 32, 32}, torch::kUInt8)};
  const data::MaskingGenerator gen({4, 4, 6, 2, -1, 0.3});
  std::vector<torch::Tensor> masks;
  for (uint64_t i = 0; i < 8; ++i) {
    data::Rng rng(i);
    masks.push_back(gen(rng).flatten());
  }
  b.masks = torch::stack(masks).to(torch::kBool);
  b.indices = torch::arange(8);
  expect_step_matches<PretrainConfig>(cfg, &make_pretrain_trainer, b);
}

}  // namespace
}  // namespace beitv2
