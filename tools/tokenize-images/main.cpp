// tokenize-images: images -> VQ-KD token ids per image, with a codebook-usage summary.
//
//   build/bin/tokenize-images --tokenizer vqkd_encoder_base_decoder_3x768x12_clip --weights tok.safetensors
//       --images DIR --out tokens.jsonl
//
// The tokenizer's architecture: --config (a YAML model section), --tokenizer (a registered name), or, for a
// tokenizer.safetensors written by train-vqkd, the config stored in its metadata.
// Images: a folder (recursive) or --list FILE (the data layer's list format: "path [label]" per line, relative
// paths against the list's folder, labels ignored). Each image goes through the evaluation transform: shorter
// side resized to --resize (bicubic), centre-cropped to the tokenizer's input size. Unreadable images are skipped.
// Output by extension: .jsonl (one {"path", "tokens": [...]} per image) or .safetensors ("tokens" (N, L)
// int64, paths in the metadata).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "beitv2/beitv2.h"

namespace {

struct Args {
  std::string tokenizer = "vqkd_encoder_base_decoder_3x768x12_clip";
  std::string config;
  std::string weights;
  bool random_init = false;
  std::string images;
  std::string list;
  std::string out;
  int resize = 0;
  int64_t batch = 16;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
};

bool has_stored_config(const beitv2::SafetensorsFile& f) {
  const auto format = f.metadata.find("format");
  return format != f.metadata.end() && format->second == "beitv2-tokenizer" && f.metadata.count("config");
}

/// "name: weights [..] vs model [..]" for each tensor whose shape differs.
std::vector<std::string> shape_mismatches(const torch::nn::Module& m, const beitv2::TensorMap& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, t] : beitv2::state_dict(m)) {
    const auto it = tensors.find(name);
    if (it != tensors.end() && !it->second.sizes().equals(t.sizes())) {
      out.push_back(c10::str(name, ": weights ", it->second.sizes(), " vs model ", t.sizes()));
    }
  }
  return out;
}

/// A --tokenizer that does not fit a file with its own stored config: say so first, then a few examples.
[[noreturn]] void refuse_other_config(const Args& a, const beitv2::VqkdConfig& stored,
                                      const std::vector<std::string>& mismatches) {
  const auto& e = stored.encoder;
  std::ostringstream os;
  os << a.weights << " holds its own tokenizer config (encoder img_size " << e.img_size << ", patch_size "
     << e.patch_size << ", embed_dim " << e.embed_dim << ", depth " << e.depth << "; n_code " << stored.n_code
     << ", code_dim " << stored.code_dim << ", target_dim " << stored.target_dim << "), which differs from --tokenizer "
     << a.tokenizer << ": leave --tokenizer out to use the stored config. " << mismatches.size()
     << " tensors differ in shape, e.g.:";
  for (size_t i = 0; i < std::min<size_t>(mismatches.size(), 5); ++i) os << "\n    " << mismatches[i];
  if (mismatches.size() > 5) os << "\n    ... and " << mismatches.size() - 5 << " more";
  throw std::runtime_error(os.str());
}

int run(const Args& a, bool tokenizer_given) {
  using namespace beitv2;
  torch::set_num_threads(a.threads);
  SafetensorsFile weights;
  if (!a.weights.empty()) weights = read_safetensors(a.weights);
  // Which tokenizer: --config, else --tokenizer, else the config train-vqkd stored in the weights' metadata.
  VqkdConfig cfg;
  std::string label = a.tokenizer;
  std::optional<VqkdConfig> stored;
  if (has_stored_config(weights)) {
    try {
      stored = tokenizer_config(a.weights, weights.metadata);
    } catch (const ConfigError&) {
      if (!tokenizer_given && a.config.empty()) throw;  // else --tokenizer or --config replaces it
    }
  }
  if (!a.config.empty()) {
    YAML::Node root = load_yaml_file(a.config);
    YamlMap top(root, a.config, "");
    auto m = top.child("model");
    cfg = vqkd_config_from_yaml(m);
    label = a.config;
  } else if (!tokenizer_given && stored) {
    cfg = *stored;
    label = a.weights + " (its stored config)";
  } else {
    cfg = tokenizer_config(a.weights, weights.metadata, a.tokenizer);
  }
  VQKD vq(cfg);
  if (!a.weights.empty()) {
    if (tokenizer_given && a.config.empty() && stored && stored->to_yaml() != cfg.to_yaml()) {
      if (const auto bad = shape_mismatches(*vq, weights.tensors); !bad.empty()) refuse_other_config(a, *stored, bad);
      log::warn(a.weights + " holds its own tokenizer config, which differs from --tokenizer " + a.tokenizer +
                " (the shapes fit); using --tokenizer");
    }
    load_state_dict(*vq, weights.tensors, {}, a.weights);
  } else if (a.random_init) {
    log::warn("--random-init: RANDOM weights, codebook from k-means on the first batch (ids are meaningless)");
  } else {
    throw std::runtime_error("no --weights given (pass --random-init to tokenise with random weights)");
  }
  vq->eval();

  const auto images =
      a.list.empty() ? data::ImageDataset::folder(a.images) : data::ImageDataset::list_file(a.list);
  data::EvalTransform eval;
  eval.crop = static_cast<int>(cfg.encoder.img_size);
  eval.resize = a.resize;  // 0: crop * 256 / 224
  eval.validate();
  log::info(c10::str(images.size(), " images, tokenizer ", label, ", resize ", eval.resize_size(), " crop ",
                     eval.crop, ", ", a.threads, " threads"));

  std::vector<std::string> paths;
  std::vector<torch::Tensor> ids;
  int64_t skipped = 0;
  auto t0 = std::chrono::steady_clock::now();
  torch::InferenceMode guard;
  for (int64_t i = 0; i < images.size(); i += a.batch) {
    std::vector<cv::Mat> imgs;
    for (int64_t j = i; j < std::min(images.size(), i + a.batch); ++j) {
      try {
        imgs.push_back(eval(images.load(j)));
        paths.push_back(images.path(j).string());
      } catch (const IoError& e) {
        log::warn(std::string("skipping ") + e.what());
        ++skipped;
      }
    }
    if (!imgs.empty()) ids.push_back(vq->get_tokens(data::to_uint8_batch(imgs)).cpu());
  }
  if (ids.empty()) throw std::runtime_error("no image could be decoded");
  auto all = torch::cat(ids);  // N, L
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (!a.out.empty()) {
    const std::filesystem::path out(a.out);
    if (out.extension() == ".safetensors") {
      nlohmann::json p = paths;
      write_safetensors(out, {{"tokens", all}}, {{"paths", p.dump()}, {"tokenizer", a.tokenizer}});
    } else if (out.extension() == ".jsonl") {
      std::string text;
      for (size_t i = 0; i < paths.size(); ++i) {
        auto row = all[static_cast<int64_t>(i)];
        nlohmann::json j = {{"path", paths[i]},
                            {"tokens", std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel())}};
        text += j.dump() + "\n";
      }
      write_file_atomic(out, text);
    } else {
      throw std::runtime_error(a.out + ": output must end in .jsonl or .safetensors");
    }
    std::cout << "wrote " << a.out << "\n";
  }
  std::cout << "tokenised " << all.size(0) << " images (" << skipped << " skipped) into [" << all.size(0) << ", "
            << all.size(1) << "] ids in " << secs << " s (" << all.size(0) / secs << " images/s)\n";
  std::cout << "codebook usage: " << codebook_usage(all, cfg.n_code).to_string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"beitv2 tokenize-images: VQ-KD token ids for images"};
  auto* tok = app.add_option("--tokenizer", a.tokenizer,
                             "registered tokenizer (default: the config stored in --weights by train-vqkd, else this)")
                  ->capture_default_str();
  app.add_option("--config", a.config, "YAML file with a model: section (instead of --tokenizer)");
  app.add_option("--weights", a.weights, "tokenizer .safetensors (official names)");
  app.add_flag("--random-init", a.random_init, "allow random weights (testing the pipeline)");
  auto* img = app.add_option("--images", a.images, "folder of images (recursive)");
  auto* lst = app.add_option("--list", a.list, "file with one image path per line");
  img->excludes(lst);
  app.add_option("--out", a.out, "output .jsonl or .safetensors");
  app.add_option("--resize", a.resize, "shorter side before the centre crop (default 0: crop*256/224)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--batch", a.batch)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--threads", a.threads)->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (a.images.empty() && a.list.empty()) {
    std::cerr << "tokenize-images: error: give --images DIR or --list FILE\n";
    return 2;
  }
  try {
    return run(a, tok->count() > 0);
  } catch (const std::exception& e) {
    std::cerr << "tokenize-images: error: " << e.what() << "\n";
    return 1;
  }
}
