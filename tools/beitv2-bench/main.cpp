// beitv2-bench: micro-benchmarks printed as one JSON line each, for scripts/bench.sh to set beside the
// PyTorch numbers measured in the same run (tools/bench_reference.py). Never used by tests.
//
//   build/bin/beitv2-bench vit-forward --model vit_base_patch16_224 --batch 8 --threads 2
//   build/bin/beitv2-bench data-loader --images /usr/share/doc/opencv-doc/examples/data --workers 2
//   build/bin/beitv2-bench vqkd-train-step --size base --batch 8 --threads 2
//   build/bin/beitv2-bench mim-train-step --size base --batch 8 --threads 2
// The train steps also print the achieved FLOP rate, its share of the machine's fp32 GEMM rate measured in the
// same run, and the peak RSS (tools/beitv2-bench/steps.h).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "beitv2/beitv2.h"
#include "beitv2/data.h"

#include "steps.h"

namespace beitv2::bench {
nlohmann::json vqkd_train_step(const StepOptions& o);
nlohmann::json mim_train_step(const StepOptions& o);
}

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

// data-loader: decoded + augmented images/s of the threaded loader with the tokenizer-training transform
// (RandomResizedCrop(size, (0.08, 1), bicubic) -> hflip -> uint8 (B, 3, size, size)), over whole epochs of a
// folder; tools/bench_reference.py data-loader runs the same with torchvision + PIL + DataLoader.
struct DataLoaderArgs {
  std::string images = "/usr/share/doc/opencv-doc/examples/data";
  std::string kind = "folder";  // folder | image_folder | list
  int workers = 2;
  int64_t batch = 32;
  int size = 224;
  int64_t warmup = 2;      // batches before timing
  int64_t measure = 1000;  // images timed (whole batches, across epochs)
  uint64_t seed = 0;
};

int data_loader(const DataLoaderArgs& a) {
  torch::set_num_threads(1);
  auto ds = std::make_shared<const beitv2::data::ImageDataset>(beitv2::data::ImageDataset::open(a.kind, a.images));
  beitv2::data::TrainTransform t;
  t.crop.size = a.size;
  beitv2::data::LoaderOptions o;
  o.batch_size = a.batch;
  o.num_workers = a.workers;
  o.prefetch_batches = 2 * a.workers;  // torch DataLoader's default prefetch_factor 2 per worker
  o.drop_last = false;
  o.seed = a.seed;
  beitv2::data::Loader loader(ds->size(), beitv2::data::train_sample_fn(ds, t), o);
  int64_t epoch = 0, batches = 0, timed = 0;
  uint64_t checksum = 0;
  std::chrono::steady_clock::time_point t0;
  loader.start_epoch(epoch);
  while (timed < a.measure) {
    auto b = loader.next();
    if (!b) {
      loader.start_epoch(++epoch);
      continue;
    }
    checksum += static_cast<uint64_t>(b->images[0][0][0][0][0].item<uint8_t>());
    if (++batches == a.warmup) t0 = std::chrono::steady_clock::now();
    if (batches > a.warmup) timed += b->size();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json j = {{"bench", "data-loader"}, {"impl", "beitv2"}, {"images", a.images},
                      {"dataset_size", ds->size()}, {"workers", a.workers}, {"batch", a.batch},
                      {"size", a.size}, {"timed_images", timed}, {"seconds", s},
                      {"images_per_s", static_cast<double>(timed) / s}, {"skipped", loader.skipped_count()},
                      {"checksum", checksum}};
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
  DataLoaderArgs dl;
  auto* dsub = app.add_subcommand("data-loader", "decoded + augmented images/s of the threaded data loader");
  dsub->add_option("--images", dl.images, "dataset folder (or list file)")->capture_default_str();
  dsub->add_option("--kind", dl.kind, "folder | image_folder | list")->capture_default_str();
  dsub->add_option("--workers", dl.workers)->capture_default_str();
  dsub->add_option("--batch", dl.batch)->capture_default_str();
  dsub->add_option("--size", dl.size)->capture_default_str();
  dsub->add_option("--warmup", dl.warmup, "batches before timing")->capture_default_str();
  dsub->add_option("--measure", dl.measure, "images to time")->capture_default_str();
  dsub->add_option("--seed", dl.seed)->capture_default_str();
  auto step_command = [&](const std::string& name, const std::string& about, beitv2::bench::StepOptions& a) {
    auto* c = app.add_subcommand(name, about);
    c->add_option("--size", a.size, "tiny | base")->capture_default_str();
    c->add_option("--batch", a.batch)->capture_default_str();
    c->add_option("--threads", a.threads)->capture_default_str();
    c->add_option("--warmup", a.warmup)->capture_default_str();
    c->add_option("--iters", a.iters)->capture_default_str();
    c->add_option("--device", a.device, "cpu | cuda")->capture_default_str();
    c->add_option("--amp", a.amp, "none | bf16 (CUDA autocast)")->capture_default_str();
    c->add_option("--peak-tflops", a.peak_tflops, "the card's dense peak for the dtype, for MFU")->capture_default_str();
    return c;
  };
  beitv2::bench::StepOptions vq, mim;
  auto* vsub = step_command("vqkd-train-step", "one VQ-KD training step (teacher included) images/s", vq);
  auto* msub = step_command("mim-train-step", "one BEiT v2 pretraining step (tokenizer included) images/s", mim);
  CLI11_PARSE(app, argc, argv);
  try {
    if (sub->parsed()) return vit_forward(vf);
    if (dsub->parsed()) return data_loader(dl);
    if (vsub->parsed()) {
      std::cout << beitv2::bench::vqkd_train_step(vq).dump() << std::endl;
    }
    if (msub->parsed()) {
      std::cout << beitv2::bench::mim_train_step(mim).dump() << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << "beitv2-bench: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
