// extract-features: a ViT forward pass over a folder of images -> pooled features (B, D), with throughput.
//
//   build/bin/extract-features --model vit_base_patch16_224 --images /usr/share/doc/opencv-doc/examples/data
//
// Weights: --weights FILE.safetensors (official names), else random init (said loudly).
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "beitv2/beitv2.h"

namespace {

struct Args {
  std::string model = "vit_base_patch16_224";
  std::string config;
  std::vector<std::string> overrides;
  std::string weights;
  std::string images = "/usr/share/doc/opencv-doc/examples/data";
  std::string out;
  int64_t batch = 8;
  int64_t max_images = 0;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(const Args& a) {
  using namespace beitv2;
  torch::set_num_threads(a.threads);
  ViTConfig cfg;
  std::string model_name = a.model;
  if (!a.config.empty()) {
    YAML::Node root = load_yaml_file(a.config);
    for (const auto& s : a.overrides) apply_yaml_override(root, s);
    YamlMap top(root, a.config, "");
    auto m = top.child("model");
    cfg = vit_config_from_yaml(m);
    top.finish();
    model_name = a.config;
  } else {
    cfg = vit_preset(a.model);
  }
  VisionTransformer vit(cfg);
  if (!a.weights.empty()) {
    load_weights(*vit, a.weights);
    log::info("weights: " + a.weights);
  } else {
    log::warn("no --weights given: RANDOM-INIT weights (features are meaningless; the pipeline is real)");
  }
  vit->eval();
  int64_t n_params = 0;
  for (const auto& p : vit->parameters()) n_params += p.numel();

  const auto images = data::ImageDataset::folder(a.images);
  const int64_t count = a.max_images > 0 ? std::min(images.size(), a.max_images) : images.size();
  data::EvalTransform eval;  // resize crop * 256 / 224 (the standard eval ratio), bicubic centre crop
  eval.crop = static_cast<int>(cfg.img_size);
  eval.validate();
  log::info(c10::str("model ", model_name, " (", n_params / 1e6, "M params), ", count, " images from ", a.images,
                     ", ", a.threads, " threads, batch ", a.batch));

  torch::InferenceMode guard;
  std::vector<torch::Tensor> feats;
  double t_decode = 0, t_forward = 0;
  int64_t skipped = 0;
  for (int64_t i = 0; i < count; i += a.batch) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<cv::Mat> imgs;
    for (int64_t j = i; j < std::min(count, i + a.batch); ++j) {
      try {
        imgs.push_back(eval(images.load(j)));
      } catch (const IoError& e) {
        log::warn(std::string("skipping ") + e.what());
        ++skipped;
      }
    }
    if (imgs.empty()) continue;
    auto x = data::normalize_images(data::to_uint8_batch(imgs), data::kImagenetMean, data::kImagenetStd);
    t_decode += seconds_since(t0);
    auto t1 = std::chrono::steady_clock::now();
    feats.push_back(vit->forward_head(vit->forward_features(x), /*pre_logits=*/true));
    t_forward += seconds_since(t1);
  }
  TORCH_CHECK(!feats.empty(), "no image in ", a.images, " could be decoded");
  auto all = torch::cat(feats);
  std::cout << "features: [" << all.size(0) << ", " << all.size(1) << "] (images x dim), " << skipped
            << " skipped\n";
  std::cout << "throughput: forward " << all.size(0) / t_forward << " images/s, decode+resize "
            << all.size(0) / t_decode << " images/s (" << a.threads << " threads, batch " << a.batch << ")\n";
  std::cout << "feature norm mean " << all.norm(2, 1).mean().item<double>() << ", finite "
            << (all.isfinite().all().item<bool>() ? "yes" : "NO") << "\n";
  if (!a.out.empty()) {
    write_safetensors(a.out, {{"features", all}}, {{"model", model_name}, {"images", a.images}});
    std::cout << "wrote " << a.out << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"beitv2 extract-features: ViT features for a folder of images"};
  app.add_option("--model", a.model, "registered model name")->capture_default_str();
  app.add_option("--config", a.config, "YAML file with a model: section (instead of --model)");
  app.add_option("--set", a.overrides, "config override key.path=value (with --config)");
  app.add_option("--weights", a.weights, "safetensors weights with official names");
  app.add_option("--images", a.images, "folder of images (recursive)")->capture_default_str();
  app.add_option("--batch", a.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-images", a.max_images, "use at most this many images (0 = all)");
  app.add_option("--threads", a.threads, "intra-op threads")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--out", a.out, "write features to this .safetensors file");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::cerr << "extract-features: error: " << e.what() << "\n";
    return 1;
  }
}
