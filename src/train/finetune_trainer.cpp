// finetune-beitv2's own parts (include/beitv2/train/finetune_trainer.h; docs/reference.md §5). Reference:
// microsoft/unilm beit2/run_class_finetuning.py, engine_for_finetuning.py, optim_factory.py at 768a3c8.
#include "beitv2/train/finetune_trainer.h"

#include <torch/torch.h>

#include <cstring>
#include <fstream>

#include "beitv2/core/config_yaml.h"
#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"
#include "beitv2/data/dataset.h"
#include "beitv2/data/image.h"
#include "beitv2/data/pipelines.h"
#include "beitv2/data/random_erasing.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/models/registry.h"
#include "beitv2/models/vit.h"
#include "beitv2/train/checkpoint.h"
#include "beitv2/train/ema.h"
#include "beitv2/train/finetune_init.h"
#include "beitv2/train/mixup.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/optim.h"

namespace beitv2 {

// ---- config ----

FinetuneOptimConfig::FinetuneOptimConfig() {
  // run_class_finetuning.py defaults: lr 5e-4 (not batch-scaled), min_lr 1e-6, warmup 5 epochs from 0
  // (utils.cosine_scheduler's start value; --warmup_lr is not passed to it), wd 0.05, AdamW betas (0.9, 0.999).
  lr = 5e-4;
  scale_lr = false;
  min_lr = 1e-6;
  warmup_lr = 0.0;
  weight_decay = 0.05;
  beta1 = 0.9;
  beta2 = 0.999;
  eps = 1e-8;
  warmup_epochs = 5;
  warmup_steps = -1;
  clip_grad = 0.0;
}

void read_yaml(YamlMap& m, FinetuneOptimConfig& c) {
  if (m.has("warmup_epochs") && m.has("warmup_steps")) m.fail("warmup_steps", "give either warmup_epochs or warmup_steps, not both");
  read_fields(m, c);
}

void FinetuneOptimConfig::validate() const {
  OptimConfig::validate();
  if (!(layer_decay > 0 && layer_decay <= 1)) config_fail("optim.layer_decay", config_text(layer_decay), "must be in (0, 1]");
}

void FinetuneInitConfig::validate() const {
  if (kind != "auto" && kind != "mim" && kind != "vqkd" && kind != "classifier") {
    config_fail("init.kind", kind, "auto, mim, vqkd or classifier");
  }
}

void FinetuneAugmentConfig::validate() const {
  if (rand_augment != "none") {
    try {
      data::RandAugmentOptions::parse(rand_augment);
    } catch (const std::exception& e) {
      config_fail("augment.rand_augment", rand_augment, e.what());
    }
  }
  if (!(hflip >= 0 && hflip <= 1)) config_fail("augment.hflip", config_text(hflip), "must be in [0, 1]");
  if (!(reprob >= 0 && reprob <= 1)) config_fail("augment.reprob", config_text(reprob), "must be in [0, 1]");
  if (remode != "pixel" && remode != "rand" && remode != "const") config_fail("augment.remode", remode, "pixel, rand or const");
  if (recount < 1) config_fail("augment.recount", config_text(recount), "must be >= 1");
  if (!(crop_pct > 0 && crop_pct <= 1)) config_fail("augment.crop_pct", config_text(crop_pct), "must be in (0, 1]");
}

void FinetuneEmaConfig::validate() const {
  if (!(decay >= 0 && decay < 1)) config_fail("ema.decay", config_text(decay), "must be in [0, 1)");
}

void FinetuneMixupConfig::validate() const {
  if (mixup < 0) config_fail("mixup.mixup", config_text(mixup), "must be >= 0 (0 = off)");
  if (cutmix < 0) config_fail("mixup.cutmix", config_text(cutmix), "must be >= 0 (0 = off)");
  if (!(prob >= 0 && prob <= 1)) config_fail("mixup.prob", config_text(prob), "must be in [0, 1]");
  if (!(switch_prob >= 0 && switch_prob <= 1)) config_fail("mixup.switch_prob", config_text(switch_prob), "must be in [0, 1]");
  if (!(smoothing >= 0 && smoothing < 1)) config_fail("mixup.smoothing", config_text(smoothing), "must be in [0, 1)");
}

ViTConfig FinetuneConfig::default_model() {
  auto c = vit_preset("beitv2_base_patch16_224");
  c.drop_path_rate = 0.1;
  return c;
}

FinetuneConfig FinetuneConfig::load(const std::string& file, const std::vector<std::string>& overrides) {
  return load_config<FinetuneConfig>(file, overrides);
}

void FinetuneConfig::validate() const {
  model.validate();
  init.validate();
  data.validate();
  augment.validate();
  mixup.validate();
  optim.validate();
  ema.validate();
  train.validate();
  if ((mixup.mixup > 0 || mixup.cutmix > 0) && data.batch_size % 2 != 0) {
    config_fail("data.batch_size", config_text(data.batch_size), "must be even with Mixup/CutMix (the batch is mixed with its reverse)");
  }
}

std::string FinetuneConfig::to_yaml() const { return beitv2::to_yaml(*this); }

namespace {

// ---- data ----

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

data::EvalTransform eval_transform(int64_t size, double crop_pct, int interpolation) {
  data::EvalTransform t;
  t.crop = static_cast<int>(size);
  t.crop_pct = crop_pct;
  t.interpolation = interpolation;
  return t;
}

// ---- the trainer ----

class FinetuneTrainer : public Trainer {
 public:
  explicit FinetuneTrainer(const FinetuneConfig& cfg)
      : cfg_(cfg), device_(cfg.train.device == "cuda" ? torch::kCUDA : torch::kCPU) {
    const auto& d = cfg.data;
    const auto& tc = cfg.train;
    train_set_ = open_image_folder("data.train", d.train);
    const int64_t classes = train_set_->num_classes();
    if (cfg_.model.num_classes == 0) {
      cfg_.model.num_classes = classes;
    } else if (cfg_.model.num_classes != classes) {
      config_fail("model.num_classes", config_text(cfg_.model.num_classes),
                  c10::str("data.train (", d.train, ") has ", classes,
                           " class folders: set it to that or to 0 (= from the data)"));
    }
    if (!d.val.empty()) {
      val_set_ = open_image_folder("data.val", d.val);
      if (val_set_->class_names() != train_set_->class_names()) {
        config_fail("data.val", d.val, c10::str("its ", val_set_->num_classes(), " class folders differ from data.train's ",
                                                classes, " (", join(train_set_->class_names(), ", "), ")"));
      }
    }
    const int64_t size = cfg_.model.img_size;
    const int interp = data::parse_interpolation(d.interpolation);

    // Training view: RandomResizedCrop + flip + RandAugment; data.limit = an evenly strided subset.
    data::FinetuneTransform t;
    t.crop.size = static_cast<int>(size);
    t.crop.scale = {d.min_crop_scale, 1.0};
    t.crop.interpolation = interp;
    t.hflip = cfg.augment.hflip;
    if (cfg.augment.rand_augment == "none") {
      data::RandAugmentOptions off;
      off.num_ops = 0;
      t.rand_augment = data::RandAugment(off);
    } else {
      t.rand_augment = data::RandAugment(data::RandAugmentOptions::parse(cfg.augment.rand_augment));
    }
    const int64_t n = train_set_->size();
    const int64_t count = d.limit > 0 ? std::min(d.limit, n) : n;
    auto base = data::finetune_sample_fn(train_set_, t);
    data::SampleFn fn = count == n ? base : data::SampleFn([base, n, count](int64_t i, data::Rng& rng) {
      return base(i * n / count, rng);
    });
    train_ = make_batch_source(count, std::move(fn), loader_options(d, /*train=*/true, tc.seed, d.batch_size, dist::rank(), dist::world()));
    if (val_set_) {
      const int64_t vb = d.val_batch_size > 0 ? d.val_batch_size : d.batch_size * 3 / 2;
      val_ = make_batch_source(val_set_->size(),
                               data::eval_sample_fn(val_set_, eval_transform(size, cfg.augment.crop_pct, interp)),
                               loader_options(d, /*train=*/false, tc.seed, vb));
    }
    if (cfg.augment.reprob > 0) {
      data::RandomErasingOptions e;
      e.probability = cfg.augment.reprob;
      e.mode = cfg.augment.remode;
      e.max_count = cfg.augment.recount;
      erasing_ = std::make_unique<data::RandomErasing>(e);
    }
    mixup_.mixup_alpha = cfg.mixup.mixup;
    mixup_.cutmix_alpha = cfg.mixup.cutmix;
    mixup_.prob = cfg.mixup.prob;
    mixup_.switch_prob = cfg.mixup.switch_prob;
    mixup_.label_smoothing = cfg.mixup.smoothing;
    mixup_.num_classes = cfg_.model.num_classes;

    // Model: fresh init (head scaled by init_scale), then the pretrained weights.
    torch::manual_seed(tc.seed);
    model_ = VisionTransformer(cfg_.model);
    if (!cfg.init.weights.empty()) {
      if (!std::filesystem::is_regular_file(cfg.init.weights)) config_fail("init.weights", cfg.init.weights, "no such file");
      InitOptions io;
      io.kind = cfg.init.kind;
      io.allow_missing = cfg.init.allow_missing;
      io.allow_unexpected = cfg.init.allow_unexpected;
      const auto report = init_classifier(model_, read_safetensors(cfg.init.weights).tensors, io, cfg.init.weights);
      log::info(report.to_string());
      init_line_ = c10::str(report.kind, " weights ", cfg.init.weights, ": ", report.taken.size(), " taken, ",
                            report.dropped.size(), " dropped, ", report.initialised.size(), " new");
    } else {
      init_line_ = "from scratch (no init.weights)";
    }
    model_->to(device_);
    model_->train();
    if (cfg.ema.enabled) {
      // A second instance for the average; building it must not move the global generator, so that a run is
      // the same with and without the EMA.
      auto gen = torch::globalContext().defaultGenerator(torch::kCPU);
      const auto rng_state = gen.get_state();
      VisionTransformer copy(cfg_.model);
      gen.set_state(rng_state);
      copy->to(device_);
      ema_ = std::make_unique<ModelEma>(copy.ptr(), *model_, cfg.ema.decay);
      ema_model_ = copy;
    }
    groups_ = finetune_param_groups(model_, cfg.optim);
    opt_ = make_adamw(groups_, cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps);

    // The best weights so far: kept across resumes, forgotten by a fresh run.
    best_dir_ = std::filesystem::path(tc.out_dir) / "best";
    if (CheckpointManager(tc.out_dir, tc.keep_last).candidates().empty()) {
      std::filesystem::remove_all(best_dir_);
    } else if (std::filesystem::exists(best_dir_ / "best.json")) {
      best_acc1_ = nlohmann::json::parse(read_file(best_dir_ / "best.json")).value("val_acc1", -1.0);
    }
  }

  torch::nn::Module& model() override { return *model_; }
  torch::optim::AdamW& optimizer() override { return *opt_; }
  const std::vector<ParamGroup>& param_groups() const override { return groups_; }
  BatchSource& batches() override { return *train_; }

  LossOutput forward_loss(const data::Batch& batch) override {
    auto x = data::normalize_images(batch.images.at(0).to(device_, /*non_blocking=*/true), data::kImagenetMean,
                                    data::kImagenetStd);
    const auto seed = static_cast<uint64_t>(cfg_.train.seed);
    if (erasing_) erasing_->apply_(x, seed, batch.epoch, batch.indices);
    // One draw per batch from (seed, epoch, batch), so a resumed run mixes exactly as an uninterrupted one.
    auto rng = data::Rng::for_sample(seed ^ 0x6d69787570ull, batch.epoch, batch.step);
    const auto draw = draw_mixup(mixup_, x.size(2), x.size(3), rng);
    apply_mixup_(x, draw);
    const auto target = mixup_target(batch.labels.to(device_), mixup_.num_classes, draw.lam, mixup_.label_smoothing);
    const auto logits = model_->forward(x);
    return {soft_target_cross_entropy(logits, target), {}};
  }

  void after_update() override {
    if (ema_) ema_->update(*model_);
  }

  TensorMap extra_state() const override {
    TensorMap out;
    if (ema_) {
      for (auto& [k, v] : ema_->state()) out.emplace(kEmaPrefix + k, v);
    }
    return out;
  }

  void load_extra_state(const TensorMap& tensors) override {
    TensorMap ema;
    for (const auto& [k, v] : tensors) {
      if (k.rfind(kEmaPrefix, 0) == 0) ema.emplace(k.substr(std::strlen(kEmaPrefix)), v);
    }
    if (!ema_) {
      if (!ema.empty()) log::info("resume: the checkpoint's model EMA is dropped (ema.enabled is false)");
      return;
    }
    if (ema.empty()) {
      log::warn("resume: the checkpoint has no model EMA; it starts again from the restored weights");
      ema_->reset(*model_);
      return;
    }
    ema_->load(ema, "the checkpoint's extra.safetensors");
  }

  nlohmann::json evaluate(int64_t epoch) override {
    if (!val_) return nlohmann::json::object();
    const auto score = validate(*model_);
    if (score.n == 0) return nlohmann::json::object();
    const double acc1 = score.acc1(), acc5 = score.acc5();
    nlohmann::json rec = {{"val_loss", score.loss / static_cast<double>(score.n)}, {"val_acc1", acc1}, {"val_acc5", acc5}};
    if (acc1 > best_acc1_) {  // official: save_model(epoch="best") when the max accuracy improves
      best_acc1_ = acc1;
      std::filesystem::create_directories(best_dir_);
      save_weights(*model_, best_dir_ / "model.safetensors", metadata());
      write_file_atomic(best_dir_ / "best.json",
                        nlohmann::json{{"epoch", epoch}, {"val_acc1", acc1}, {"val_acc5", acc5}}.dump() + "\n");
    }
    rec["best_acc1"] = best_acc1_;
    if (ema_) {  // official: "Accuracy of the model EMA on ..." after the model's own
      const auto e = validate(*ema_model_);
      rec["val_ema_loss"] = e.loss / static_cast<double>(e.n);
      rec["val_ema_acc1"] = e.acc1();
      rec["val_ema_acc5"] = e.acc5();
    }
    return rec;
  }

  std::vector<std::filesystem::path> outputs() const override {
    const std::filesystem::path dir = cfg_.train.out_dir;
    std::vector<std::filesystem::path> out = {dir / "classifier.safetensors"};
    if (cfg_.output.timm_layout) out.push_back(dir / "classifier_timm.safetensors");
    if (cfg_.ema.enabled) out.push_back(dir / "classifier_ema.safetensors");
    return out;
  }

  std::vector<std::filesystem::path> finish(int64_t step) override {
    const auto out = outputs();
    auto meta = metadata();
    meta["steps"] = std::to_string(step);
    save_weights(*model_, out[0], meta);
    if (cfg_.output.timm_layout) {
      meta["layout"] = "timm";
      write_safetensors(out[1], to_timm_layout(state_dict(*model_)), meta);
    }
    if (ema_) {
      auto ema_meta = metadata();
      ema_meta["steps"] = std::to_string(step);
      ema_meta["ema_decay"] = c10::str(ema_->decay());
      save_weights(*ema_model_, out.back(), ema_meta);
    }
    return out;
  }

  std::vector<std::pair<std::string, std::string>> describe() const override {
    std::string mix = mixup_.active() ? c10::str("mixup ", mixup_.mixup_alpha, " / cutmix ", mixup_.cutmix_alpha,
                                                 ", smoothing ", mixup_.label_smoothing)
                                      : c10::str("off, smoothing ", mixup_.label_smoothing);
    return {{"model", c10::str("ViT d", cfg_.model.embed_dim, " depth ", cfg_.model.depth, " img ", cfg_.model.img_size,
                               "/", cfg_.model.patch_size, ", ", cfg_.model.num_classes, " classes, drop path ",
                               cfg_.model.drop_path_rate, ", layer decay ", cfg_.optim.layer_decay)},
            {"init", init_line_},
            {"train", c10::str(train_->size(), " images of ", train_set_->summary())},
            {"val", val_ ? val_set_->summary() : std::string("none")},
            {"mixing", mix},
            {"ema", ema_ ? c10::str("decay ", ema_->decay(), " (val_ema_* each evaluation, classifier_ema.safetensors)")
                         : std::string("off")}};
  }

 private:
  static constexpr const char* kEmaPrefix = "model_ema.";  // in extra.safetensors (official checkpoint key)

  struct Score {
    double loss = 0;
    int64_t n = 0, top1 = 0, top5 = 0;
    double acc1() const { return 100.0 * static_cast<double>(top1) / static_cast<double>(n); }
    double acc5() const { return 100.0 * static_cast<double>(top5) / static_cast<double>(n); }
  };

  // Summed cross-entropy and top-1/top-5 hits of `model` (in eval mode; train mode restored) over data.val.
  Score validate(VisionTransformerImpl& model) {
    const bool was_training = model.is_training();
    model.eval();
    torch::NoGradGuard ng;
    Score s;
    val_->start_epoch(0, 0);
    while (auto batch = val_->next()) {
      auto x = data::normalize_images(batch->images.at(0).to(device_), data::kImagenetMean, data::kImagenetStd);
      const auto labels = batch->labels.to(device_);
      const auto logits = model.forward(x).to(torch::kFloat32);
      s.loss += torch::nn::functional::cross_entropy(logits, labels,
                                                     torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
      s.top1 += topk_correct(logits, labels, 1);
      s.top5 += topk_correct(logits, labels, 5);
      s.n += x.size(0);
    }
    model.train(was_training);
    return s;
  }

  Metadata metadata() const {
    return {{"format", "beitv2-classifier"}, {"config", cfg_.model.to_yaml()},
            {"classes", join(train_set_->class_names(), "\n")}};
  }

  FinetuneConfig cfg_;
  torch::Device device_;
  std::shared_ptr<const data::ImageDataset> train_set_, val_set_;
  std::unique_ptr<BatchSource> train_, val_;
  std::unique_ptr<data::RandomErasing> erasing_;
  MixupOptions mixup_;
  VisionTransformer model_{nullptr};
  std::vector<ParamGroup> groups_;
  std::unique_ptr<torch::optim::AdamW> opt_;
  VisionTransformer ema_model_{nullptr};  // the EMA's instance (ema.enabled)
  std::unique_ptr<ModelEma> ema_;
  std::string init_line_;
  std::filesystem::path best_dir_;
  double best_acc1_ = -1;
};

}  // namespace

std::vector<ParamGroup> finetune_param_groups(const VisionTransformer& model, const FinetuneOptimConfig& optim) {
  std::set<std::string> no_decay = model->no_weight_decay();
  const int64_t depth = model->config().depth;
  if (!optim.weight_decay_on_rel_pos_bias) {
    for (int64_t i = 0; i < depth; ++i) no_decay.insert("blocks." + std::to_string(i) + ".attn.relative_position_bias_table");
  }
  return make_param_groups(*model, optim.weight_decay, no_decay,
                           [&model](const std::string& name) { return model->layer_id_for(name); }, depth + 2,
                           optim.layer_decay);
}

std::unique_ptr<Trainer> make_finetune_trainer(const FinetuneConfig& config) {
  config.validate();
  return std::make_unique<FinetuneTrainer>(config);
}

RunSpec finetune_run_spec(const FinetuneConfig& config) {
  return {.name = "finetune-beitv2", .config_yaml = config.to_yaml(), .optim = &config.optim, .train = &config.train,
          .batch_per_process = config.data.batch_size,
          .resume_breaking_keys = {"model.", "init.", "data.train", "data.batch_size", "data.limit", "train.seed"}};
}

FinetuneSummary finetune(const FinetuneConfig& config, const LoopOptions& options) {
  config.validate();
  const auto r = run_training(finetune_run_spec(config), [&] { return make_finetune_trainer(config); }, options);
  FinetuneSummary s;
  s.steps = r.steps;
  s.skipped_nonfinite = r.skipped_nonfinite;
  s.finished = r.finished;
  s.first_loss = r.first_window.value("loss", 0.0);
  s.last_loss = r.last_window.value("loss", 0.0);
  s.val_acc1 = r.last_eval.value("val_acc1", -1.0);
  s.val_acc5 = r.last_eval.value("val_acc5", -1.0);
  s.best_acc1 = r.last_eval.value("best_acc1", -1.0);
  s.val_ema_acc1 = r.last_eval.value("val_ema_acc1", -1.0);
  if (r.finished) s.classifier = r.outputs.at(0);
  return s;
}

// ---- predict ----

namespace {
ViTConfig classifier_config(const SafetensorsFile& file, const std::filesystem::path& weights) {
  const auto fmt = file.metadata.find("format");
  if (fmt == file.metadata.end() || fmt->second != "beitv2-classifier") {
    throw std::runtime_error(weights.string() + ": not a classifier.safetensors written by finetune-beitv2 "
                             "(metadata format beitv2-classifier)");
  }
  YamlMap m(YAML::Load(file.metadata.at("config")), weights.string() + " (metadata)", "model");
  return vit_config_from_yaml(m);
}
}  // namespace

ViTConfig classifier_model_config(const std::filesystem::path& weights) {
  return classifier_config(read_safetensors(weights), weights);
}

std::vector<Prediction> predict(const std::filesystem::path& weights, const std::filesystem::path& images,
                                int64_t topk, double crop_pct, int64_t batch_size, const std::string& device) {
  return predict(weights, std::make_shared<const data::ImageDataset>(data::ImageDataset::folder(images)), topk,
                 crop_pct, batch_size, device);
}

std::vector<Prediction> predict(const std::filesystem::path& weights,
                                const std::shared_ptr<const data::ImageDataset>& ds, int64_t topk, double crop_pct,
                                int64_t batch_size, const std::string& device) {
  auto file = read_safetensors(weights);
  ViTConfig cfg = classifier_config(file, weights);
  std::vector<std::string> classes;
  {
    std::istringstream is(file.metadata["classes"]);
    for (std::string line; std::getline(is, line);) classes.push_back(line);
  }
  VisionTransformer model(cfg);
  load_state_dict(*model, file.tensors, {}, weights.string());
  const torch::Device dev(device == "cuda" ? torch::kCUDA : torch::kCPU);
  model->to(dev);
  model->eval();
  data::LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = false;
  o.drop_last = false;
  o.decode_policy = data::DecodePolicy::kFail;
  auto source = make_batch_source(ds->size(), data::eval_sample_fn(ds, eval_transform(cfg.img_size, crop_pct, cv::INTER_CUBIC)), o);
  std::vector<Prediction> out;
  torch::NoGradGuard ng;
  source->start_epoch(0, 0);
  while (auto batch = source->next()) {
    auto x = data::normalize_images(batch->images.at(0).to(dev), data::kImagenetMean, data::kImagenetStd);
    const auto probs = torch::softmax(model->forward(x).to(torch::kFloat32), -1).cpu();
    const auto [p, idx] = probs.topk(std::min<int64_t>(topk, probs.size(1)), 1);
    for (int64_t i = 0; i < x.size(0); ++i) {
      Prediction pr;
      pr.index = batch->indices[i].item<int64_t>();
      pr.file = ds->path(pr.index);
      for (int64_t j = 0; j < p.size(1); ++j) {
        const int64_t label = idx[i][j].item<int64_t>();
        pr.labels.push_back(label);
        pr.names.push_back(label < static_cast<int64_t>(classes.size()) ? classes[label] : std::to_string(label));
        pr.probs.push_back(p[i][j].item<double>());
      }
      out.push_back(std::move(pr));
    }
  }
  return out;
}

}  // namespace beitv2
