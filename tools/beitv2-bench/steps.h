#pragma once
// What the train-step benchmarks share (vqkd_step.cpp, mim_step.cpp): timing, the machine's
// fp32 GEMM rate measured in the same run, peak memory, and FLOPs counted from the shapes.
//
// FLOPs: 2 per multiply-add of the matmuls (linear layers, attention's QK^T and AV, the patch embedding);
// elementwise work, norms and softmax are not counted. A training pass of a trained module counts 3x its
// forward (backward = 2x forward), a frozen one (teacher, tokenizer) 1x.
#include <ATen/DeviceAccelerator.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "beitv2/models/vit_config.h"
#include "beitv2/train/batches.h"

namespace beitv2::bench {

/// What a train-step benchmark runs on.
struct StepOptions {
  std::string size = "tiny";    ///< tiny | base
  int64_t batch = 8;
  int threads = 2;
  int warmup = 2;
  int iters = 10;
  std::string device = "cpu";   ///< cpu | cuda
  std::string amp = "none";     ///< none | bf16 (CUDA)
  double peak_tflops = 0;       ///< the card's dense peak for `amp`'s dtype (MFU); 0 = not reported
};

/// Median seconds of `iters` calls after `warmup` (CUDA work is waited for inside each call).
inline double median_seconds(const std::function<void()>& f, int warmup, int iters, bool cuda = false) {
  auto call = [&] {
    f();
    if (cuda) torch::cuda::synchronize();
  };
  for (int i = 0; i < warmup; ++i) call();
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// The machine's GEMM rate (FLOP/s) measured here: on the CPU a 2048^3 fp32 at::mm at the current thread
/// count; on CUDA an 8192^3 mm in the step's dtype (bf16 under amp, else fp32). Median of 5.
inline double gemm_rate(const StepOptions& o) {
  const bool cuda = o.device == "cuda";
  const int64_t n = cuda ? 8192 : 2048;
  auto opts = torch::TensorOptions().device(cuda ? torch::kCUDA : torch::kCPU)
                  .dtype(cuda && o.amp == "bf16" ? torch::kBFloat16 : torch::kFloat32);
  auto a = torch::randn({n, n}, opts), b = torch::randn({n, n}, opts), c = torch::empty({n, n}, opts);
  const double s = median_seconds([&] { at::mm_out(c, a, b); }, 2, 5, cuda);
  return 2.0 * static_cast<double>(n * n * n) / s;
}

/// Peak memory the caching allocator handed out on GPU 0, MiB (0 on the CPU).
inline double device_peak_mib(const StepOptions& o) {
  if (o.device != "cuda") return 0;
  const auto stats = at::accelerator::getDeviceStats(0);
  const auto all = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);
  return static_cast<double>(stats.allocated_bytes[all].peak) / 1048576.0;
}

/// Peak resident memory of this process so far, MiB.
inline double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// Matmul FLOPs of one linear layer applied to `rows` vectors.
inline double linear_flops(double rows, double in, double out) { return 2 * rows * in * out; }

/// Forward matmul FLOPs of a ViT (patch embedding + blocks) on one image.
inline double vit_forward_flops(const ViTConfig& c, int64_t blocks = -1) {
  const double p = static_cast<double>(c.num_patches()), n = p + 1, d = static_cast<double>(c.embed_dim);
  const double h = d * c.mlp_ratio;
  const double block = linear_flops(n, d, 3 * d) + 2 * (2 * n * n * d) + linear_flops(n, d, d) +
                       linear_flops(n, d, h) + linear_flops(n, h, d);
  const double embed = linear_flops(p, static_cast<double>(c.in_chans * c.patch_size * c.patch_size), d);
  return embed + block * static_cast<double>(blocks < 0 ? c.depth : blocks);
}

/// The JSON line of a train-step benchmark: img/s, achieved FLOP rate, its share of the GEMM rate (and of the
/// card's peak when given: MFU), peak memory.
inline nlohmann::json step_record(const std::string& bench, const StepOptions& o, double median,
                                  double flops_per_image, double gemm) {
  const double achieved = flops_per_image * static_cast<double>(o.batch) / median;
  nlohmann::json r = {{"bench", bench},
                      {"impl", "beitv2"},
                      {"model", o.size},
                      {"device", o.device},
                      {"amp", o.amp},
                      {"batch", o.batch},
                      {"threads", o.threads},
                      {"iters", o.iters},
                      {"median_s", median},
                      {"images_per_s", static_cast<double>(o.batch) / median},
                      {"gflop_per_image", flops_per_image / 1e9},
                      {"achieved_gflops", achieved / 1e9},
                      {"gemm_gflops", gemm / 1e9},
                      {"gemm_share", achieved / gemm},
                      {"peak_rss_mib", peak_rss_mib()},
                      {"torch", TORCH_VERSION}};
  if (o.device == "cuda") r["peak_gpu_mib"] = device_peak_mib(o);
  if (o.peak_tflops > 0) r["mfu"] = achieved / (o.peak_tflops * 1e12);
  return r;
}

}  // namespace beitv2::bench
