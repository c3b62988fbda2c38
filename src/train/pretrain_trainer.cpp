// pretrain-beitv2's own parts (docs/reference.md §3–§4). Reference: microsoft/unilm
// beit2/run_beitv2_pretraining.py, engine_for_pretraining.py, datasets.py (DataAugmentationForBEiT).
// Divergences (docs/divergences.md): the non-finite policy of the shared loop (the official script stops on
// the first NaN), the tokenizer and losses in fp32 under bf16 autocast (officially all under fp16 autocast).
#include "beitv2/train/pretrain_trainer.h"

#include <torch/torch.h>

#include "beitv2/core/autocast.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/core/log.h"
#include "beitv2/data/image.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/models/vqkd.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/optim.h"
#include "beitv2/train/plots.h"

namespace beitv2 {

// ---- config ----

void TokenizerConfig::validate() const {
  if (path.empty()) config_fail("tokenizer.path", "\"\"", "a tokenizer weights file is required (train-vqkd writes one)");
  try {
    data::parse_interpolation(interpolation);
  } catch (const std::invalid_argument& e) {
    config_fail("tokenizer.interpolation", interpolation, e.what());
  }
}

DataConfig PretrainConfig::default_data() {
  DataConfig d;
  d.batch_size = 128;
  d.min_crop_scale = 0.2;
  return d;
}

OptimConfig PretrainConfig::default_optim() {
  OptimConfig o;
  o.lr = 1.5e-3;
  o.scale_lr = false;  // run_beitv2_pretraining.py uses --lr as given
  o.min_lr = 1e-5;
  o.weight_decay = 0.05;
  o.beta1 = 0.9;
  o.beta2 = 0.999;
  o.warmup_epochs = 10;
  o.clip_grad = 3.0;
  return o;
}

PretrainConfig PretrainConfig::load(const std::string& file, const std::vector<std::string>& overrides) {
  return load_config<PretrainConfig>(file, overrides);
}

void PretrainConfig::validate() const {
  model.validate();
  tokenizer.validate();
  data.validate();
  data::MaskingOptions m{model.backbone.grid_size(), model.backbone.grid_size(), mask.num_patches,
                         mask.min_patches, mask.max_patches, mask.min_aspect};
  try {
    m.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("mask: ") + e.what());
  }
  optim.validate();
  train.validate();
}

// ---- the trainer ----

namespace {

class PretrainTrainer : public Trainer {
 public:
  PretrainTrainer(const PretrainConfig& cfg, std::unique_ptr<BatchSource> train)
      : cfg_(cfg), device_(cfg.train.device == "cuda" ? torch::kCUDA : torch::kCPU), train_(std::move(train)) {
    const auto& tc = cfg.train;
    const auto& bb = cfg.model.backbone;
    try {
      tokenizer_ = load_tokenizer(cfg.tokenizer.path, cfg.tokenizer.preset, device_);
    } catch (const std::exception& e) {
      throw ConfigError(std::string("tokenizer.path = ") + cfg.tokenizer.path + ": " + e.what());
    }
    const auto& tk = tokenizer_->config();
    if (tk.encoder.grid_size() != bb.grid_size() || tk.n_code != cfg.model.vocab_size) {
      throw ConfigError(c10::str("tokenizer.path = ", cfg.tokenizer.path, ": its grid ", tk.encoder.grid_size(), "x",
                                 tk.encoder.grid_size(), " and ", tk.n_code, " codes do not fit the model's grid ",
                                 bb.grid_size(), "x", bb.grid_size(), " and model.vocab_size ", cfg.model.vocab_size));
    }
    data::TwoViewTransform t;
    t.scale = {cfg.data.min_crop_scale, 1.0};
    t.size = static_cast<int>(bb.img_size);
    t.second_size = static_cast<int>(tk.encoder.img_size);
    t.interpolation = data::parse_interpolation(cfg.data.interpolation);
    t.second_interpolation = data::parse_interpolation(cfg.tokenizer.interpolation);
    const data::MaskingOptions m{bb.grid_size(), bb.grid_size(), cfg.mask.num_patches, cfg.mask.min_patches,
                                 cfg.mask.max_patches, cfg.mask.min_aspect};
    if (!train_) {
      train_ = make_two_view_batches("data.train", cfg.data.train, cfg.data, t, m, /*train=*/true, tc.seed,
                                     cfg.data.batch_size, cfg.data.limit, dist::rank(), dist::world());
    }
    if (!cfg.data.val.empty()) {
      const int64_t vb = cfg.data.val_batch_size > 0 ? cfg.data.val_batch_size : cfg.data.batch_size * 3 / 2;
      val_ = make_two_view_batches("data.val", cfg.data.val, cfg.data, t, m, /*train=*/false, tc.seed, vb);
    }
    torch::manual_seed(tc.seed);
    model_ = BeitV2ForMIM(cfg.model);
    model_->to(device_);
    model_->train();
    groups_ = make_param_groups(*model_, cfg.optim.weight_decay, model_->no_weight_decay());
    opt_ = make_adamw(groups_, cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps);
  }

  torch::nn::Module& model() override { return *model_; }
  torch::optim::AdamW& optimizer() override { return *opt_; }
  const std::vector<ParamGroup>& param_groups() const override { return groups_; }
  BatchSource& batches() override { return *train_; }

  LossOutput forward_loss(const data::Batch& batch) override {
    auto [out, labels] = forward(batch);
    AutocastOff fp32;  // losses in fp32
    const auto l = mim_loss(out, labels);
    std::vector<std::pair<std::string, torch::Tensor>> m = {{"loss_1", l.loss_1.detach()}, {"mlm_acc_1", l.mlm_acc_1}};
    if (l.loss_2.defined()) {
      m.emplace_back("loss_2", l.loss_2.detach());
      m.emplace_back("mlm_acc_2", l.mlm_acc_2);
    }
    return {l.loss, m};
  }

  nlohmann::json evaluate(int64_t epoch) override {
    if (!val_) return nlohmann::json::object();
    model_->eval();
    torch::NoGradGuard ng;
    double l1 = 0, l2 = 0, a1 = 0, a2 = 0;
    int64_t n = 0;
    bool plotted = cfg_.train.plot_images <= 0;
    val_->start_epoch(0, 0);
    while (auto batch = val_->next()) {
      auto [out, labels] = forward(*batch);
      const auto l = mim_loss(out, labels);
      const auto m = static_cast<double>(labels.numel());
      l1 += l.loss_1.item<double>() * m;
      a1 += l.mlm_acc_1.item<double>() * m;
      if (l.loss_2.defined()) {
        l2 += l.loss_2.item<double>() * m;
        a2 += l.mlm_acc_2.item<double>() * m;
      }
      n += labels.numel();
      if (!plotted) {
        plot(*batch, batch->masks.to(device_), labels, out, epoch);
        plotted = true;
      }
    }
    model_->train();
    if (n == 0) return nlohmann::json::object();
    nlohmann::json r = {{"val_loss_1", l1 / n}, {"val_mlm_acc_1", a1 / n}};
    if (model_->config().has_cls_head()) r.update({{"val_loss_2", l2 / n}, {"val_mlm_acc_2", a2 / n}});
    return r;
  }

  std::vector<std::filesystem::path> outputs() const override {
    return {std::filesystem::path(cfg_.train.out_dir) / "backbone.safetensors"};
  }

  std::vector<std::filesystem::path> finish(int64_t step) override {
    const auto out = outputs();
    save_weights(*model_, out[0], {{"format", "beitv2-mim"}, {"config", to_yaml(cfg_.model)},
                                   {"steps", std::to_string(step)}});
    return out;
  }

  std::vector<std::pair<std::string, std::string>> describe() const override {
    const auto& tk = tokenizer_->config();
    return {{"tokenizer", c10::str(cfg_.tokenizer.path, " (", tk.n_code, " codes, ", tk.encoder.img_size, "px)")},
            {"train", c10::str(train_->size(), " images from ", cfg_.data.train)},
            {"val", val_ ? c10::str(val_->size(), " images from ", cfg_.data.val) : std::string("none")},
            {"mask", c10::str(cfg_.mask.num_patches, " of ", cfg_.model.backbone.num_patches(), " patches")}};
  }

 private:
  // The model's logits at the masked positions and their labels: the tokenizer's ids there (M), batch-major
  // then raster order.
  std::pair<MimOutput, torch::Tensor> forward(const data::Batch& batch) {
    auto x = data::normalize_images(batch.images.at(0).to(device_, /*non_blocking=*/true), data::kImagenetMean,
                                    data::kImagenetStd);
    auto mask = batch.masks.to(device_);
    auto labels = labels_for(batch.images.at(1), mask);
    return {model_->forward(x, mask), labels};
  }

  // The tokenizer's ids at the masked positions (M), batch-major then raster order; fp32, no gradients.
  torch::Tensor labels_for(const torch::Tensor& tokenizer_view, const torch::Tensor& mask) {
    torch::NoGradGuard ng;
    AutocastOff fp32;
    return tokenizer_->get_tokens(tokenizer_view.to(device_, /*non_blocking=*/true)).index({mask});
  }

  void plot(const data::Batch& batch, const torch::Tensor& mask, const torch::Tensor& labels, const MimOutput& out,
            int64_t epoch) {
    const int64_t k = std::min<int64_t>(cfg_.train.plot_images, batch.size());
    const int64_t masked = mask.slice(0, 0, k).sum().item<int64_t>();  // the first k images' rows come first
    auto spread = [&](const torch::Tensor& logits) {
      auto hit = torch::zeros_like(mask.slice(0, 0, k));
      hit.index_put_({mask.slice(0, 0, k)}, logits.slice(0, 0, masked).argmax(-1).eq(labels.slice(0, 0, masked)));
      return hit;
    };
    const auto plots = std::filesystem::path(cfg_.train.out_dir) / "plots";
    const auto hit_1 = spread(out.logits);
    const auto hit_2 = out.cls_logits.defined() ? spread(out.cls_logits) : torch::Tensor();
    const bool final = cfg_.train.final_epoch(epoch, train_->batches_per_epoch());
    for (const auto& png : plot_paths(plots, "mim", epoch, final, cfg_.train.eval_every)) {
      plot_mim_predictions(batch.images.at(0).slice(0, 0, k), mask.slice(0, 0, k), hit_1, hit_2,
                           cfg_.model.backbone.grid_size(), png);
    }
  }

  const PretrainConfig cfg_;
  torch::Device device_;
  std::unique_ptr<BatchSource> train_, val_;
  VQKD tokenizer_{nullptr};
  BeitV2ForMIM model_{nullptr};
  std::vector<ParamGroup> groups_;
  std::unique_ptr<torch::optim::AdamW> opt_;
};

}  // namespace

std::unique_ptr<Trainer> make_pretrain_trainer(const PretrainConfig& config, std::unique_ptr<BatchSource> train) {
  config.validate();
  return std::make_unique<PretrainTrainer>(config, std::move(train));
}

PretrainSummary pretrain_beitv2(const PretrainConfig& config, const LoopOptions& options) {
  config.validate();
  RunSpec spec{.name = "pretrain-beitv2", .config_yaml = to_yaml(config), .optim = &config.optim,
               .train = &config.train, .batch_per_process = config.data.batch_size};
  spec.resume_breaking_keys.push_back("tokenizer.");
  spec.resume_breaking_keys.push_back("mask.");
  PretrainSummary s;
  s.loop = run_training(spec, [&] { return make_pretrain_trainer(config); }, options);
  if (s.loop.finished) s.backbone = s.loop.outputs.at(0);
  return s;
}

}  // namespace beitv2
