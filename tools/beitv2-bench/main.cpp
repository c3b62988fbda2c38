// beitv2-bench: micro-benchmarks printed as one JSON line each, for scripts/bench.sh to set beside the
// PyTorch numbers measured in the same run (tools/bench_reference.py). Never used by tests.
//
//   build/bin/beitv2-bench vit-forward --model vit_base_patch16_224 --batch 8 --threads 2
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "beitv2/beitv2.h"

namespace {

struct VitForwardArgs {
  std::string model = "vit_base_patch16_224";
  std::string attention = "sdpa";
  int64_t batch = 8;
  int threads = 2;
  int warmup = 2;
  int iters = 10;
};

int vit_forward(const VitForwardArgs& a) {
  torch::manual_seed(0);
  torch::set_num_threads(a.threads);
  auto cfg = beitv2::vit_preset(a.model);
  cfg.attention = beitv2::parse_attention_backend(a.attention);
  beitv2::VisionTransformer vit(cfg);
  vit->eval();
  auto x = torch::randn({a.batch, cfg.in_chans, cfg.img_size, cfg.img_size});
  torch::InferenceMode guard;
  for (int i = 0; i < a.warmup; ++i) vit->forward(x);
  std::vector<double> times;
  for (int i = 0; i < a.iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    vit->forward(x);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  nlohmann::json j = {{"bench", "vit-forward"},  {"impl", "beitv2"},        {"model", a.model},
                      {"attention", a.attention}, {"batch", a.batch},       {"threads", a.threads},
                      {"iters", a.iters},         {"median_s", median},     {"images_per_s", a.batch / median},
                      {"torch", TORCH_VERSION}};
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"beitv2 micro-benchmarks (JSON lines on stdout)"};
  app.require_subcommand(1);
  VitForwardArgs vf;
  auto* sub = app.add_subcommand("vit-forward", "ViT forward (inference) images/s on random input");
  sub->add_option("--model", vf.model)->capture_default_str();
  sub->add_option("--attention", vf.attention, "sdpa | reference")->capture_default_str();
  sub->add_option("--batch", vf.batch)->capture_default_str();
  sub->add_option("--threads", vf.threads)->capture_default_str();
  sub->add_option("--warmup", vf.warmup)->capture_default_str();
  sub->add_option("--iters", vf.iters)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (sub->parsed()) return vit_forward(vf);
  } catch (const std::exception& e) {
    std::cerr << "beitv2-bench: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
