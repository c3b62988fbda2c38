// train-vqkd's own parts (docs/reference.md §1.4, §2). Reference: microsoft/unilm beit2/engine_for_vqkd.py,
// run_vqkd_training.py. Divergences (docs/divergences.md): the non-finite policy of the shared loop (skip and
// count; the official script saves and exits on the first NaN), k-means on rank 0 + broadcast.
#include "beitv2/train/vqkd_trainer.h"

#include <torch/torch.h>

#include "beitv2/core/log.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/models/vqkd.h"
#include "beitv2/teacher/teacher.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/optim.h"
#include "beitv2/train/plots.h"

namespace beitv2 {
namespace {

std::unique_ptr<Teacher> make_teacher(const TeacherConfig& t, torch::Device device, int64_t seed) {
  if (t.kind == "torchscript") return load_torchscript_teacher(t.path, device, t.bf16);
  if (!t.path.empty()) return make_native_teacher(t.native_model, t.path, device);
  // A native teacher with random weights (offline demos), seeded so that a resumed run gets the same one.
  torch::manual_seed(seed + 1000003);
  return make_native_teacher(VisionTransformer(t.native_model), "RANDOM (seed " + std::to_string(seed) + ")", device,
                             /*random_init=*/true);
}

class VqkdTrainer : public Trainer {
 public:
  VqkdTrainer(const VqkdTrainConfig& cfg, std::unique_ptr<BatchSource> train)
      : cfg_(cfg), device_(cfg.train.device == "cuda" ? torch::kCUDA : torch::kCPU), train_(std::move(train)) {
    const auto& tc = cfg.train;
    teacher_ = make_teacher(cfg.teacher, device_, tc.seed);
    teacher_->check_compatible(cfg.model);
    const int64_t size = cfg.model.encoder.img_size;
    if (!train_) {
      train_ = make_view_batches(cfg.data, size, /*train=*/true, tc.seed, cfg.data.batch_size, dist::rank(),
                                 dist::world());
    }
    if (!cfg.data.val.empty()) {
      const int64_t vb = cfg.data.val_batch_size > 0 ? cfg.data.val_batch_size : cfg.data.batch_size * 3 / 2;
      val_ = make_view_batches(cfg.data, size, /*train=*/false, tc.seed, vb);
    }
    torch::manual_seed(tc.seed);
    model_ = VQKD(cfg.model);
    model_->quantize->collectives = dist::collectives();  // EMA statistics and k-means over all processes
    model_->to(device_);
    model_->train();
    groups_ = make_param_groups(*model_, cfg.optim.weight_decay, model_->no_weight_decay());
    opt_ = make_adamw(groups_, cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps);
    if (teacher_->info().random_init) log::warn("the teacher has RANDOM weights: a pipeline check, not a tokenizer");
  }

  torch::nn::Module& model() override { return *model_; }
  torch::optim::AdamW& optimizer() override { return *opt_; }
  const std::vector<ParamGroup>& param_groups() const override { return groups_; }
  BatchSource& batches() override { return *train_; }

  LossOutput forward_loss(const data::Batch& batch) override {
    auto x = batch.images.at(0).to(device_, /*non_blocking=*/true);
    auto out = model_->forward(x, teacher_->targets(x.to(torch::kFloat32) / 255.0));
    return {out.loss, {{"rec_loss", out.rec_loss}, {"quant_loss", out.quant_loss}}};
  }

  // Official: the usage counters restart every epoch and every evaluation.
  void start_epoch(int64_t) override { model_->quantize->reset_usage(); }

  nlohmann::json evaluate(int64_t epoch) override {
    nlohmann::json r = {{"train_unused_codes", model_->quantize->unused_codes()}};
    if (!val_) return r;
    model_->eval();
    model_->quantize->reset_usage();
    torch::NoGradGuard ng;
    double loss = 0, quant = 0, rec = 0;
    int64_t n = 0;
    std::vector<torch::Tensor> ids;
    torch::Tensor first_images, first_ids;
    val_->start_epoch(0, 0);
    while (auto batch = val_->next()) {
      const auto& images = batch->images.at(0);
      auto x = images.to(device_);
      auto out = model_->forward(x, teacher_->targets(x.to(torch::kFloat32) / 255.0));
      const auto b = static_cast<double>(x.size(0));
      loss += out.loss.item<double>() * b;
      quant += out.quant_loss.item<double>() * b;
      rec += out.rec_loss.item<double>() * b;
      n += x.size(0);
      ids.push_back(out.indices.cpu());
      if (!first_images.defined() && cfg_.train.plot_images > 0) {
        first_images = images.slice(0, 0, cfg_.train.plot_images).cpu();
        first_ids = out.indices.slice(0, 0, cfg_.train.plot_images).cpu();
      }
    }
    model_->train();
    if (n == 0) return r;
    const auto usage = codebook_usage(torch::cat(ids), cfg_.model.n_code);
    r.update({{"val_loss", loss / n}, {"val_quant_loss", quant / n}, {"val_rec_loss", rec / n},
              {"val_unused_codes", model_->quantize->unused_codes()}, {"val_used_codes", usage.used},
              {"val_perplexity", usage.perplexity}});
    const auto plots = std::filesystem::path(cfg_.train.out_dir) / "plots";
    const bool final = cfg_.train.final_epoch(epoch, train_->batches_per_epoch());
    const std::string e = std::to_string(epoch);
    for (const auto& png : plot_paths(plots, "codebook_usage", epoch, final, cfg_.train.eval_every)) {
      plot_codebook_usage(usage.counts, png, "epoch " + e + " (val)");
    }
    if (first_images.defined()) {
      for (const auto& png : plot_paths(plots, "token_map", epoch, final, cfg_.train.eval_every)) {
        plot_token_maps(first_images, first_ids, cfg_.model.encoder.grid_size(), png);
      }
    }
    return r;
  }

  std::vector<std::filesystem::path> outputs() const override {
    return {std::filesystem::path(cfg_.train.out_dir) / "tokenizer.safetensors"};
  }

  std::vector<std::filesystem::path> finish(int64_t step) override {
    const auto out = outputs();
    save_weights(*model_, out[0],
                 {{"format", "beitv2-tokenizer"}, {"config", cfg_.model.to_yaml()}, {"steps", std::to_string(step)}});
    return out;
  }

  std::vector<std::pair<std::string, std::string>> describe() const override {
    return {{"teacher", teacher_->info().to_string()},
            {"train", c10::str(train_->size(), " images from ", cfg_.data.train)},
            {"val", val_ ? c10::str(val_->size(), " images from ", cfg_.data.val) : std::string("none")}};
  }

 private:
  const VqkdTrainConfig cfg_;
  torch::Device device_;
  std::unique_ptr<Teacher> teacher_;
  std::unique_ptr<BatchSource> train_, val_;
  VQKD model_{nullptr};
  std::vector<ParamGroup> groups_;
  std::unique_ptr<torch::optim::AdamW> opt_;
};

}  // namespace

std::unique_ptr<Trainer> make_vqkd_trainer(const VqkdTrainConfig& config, std::unique_ptr<BatchSource> train) {
  config.validate();
  return std::make_unique<VqkdTrainer>(config, std::move(train));
}

RunSpec vqkd_run_spec(const VqkdTrainConfig& config) {
  return {.name = "train-vqkd", .config_yaml = config.to_yaml(), .optim = &config.optim, .train = &config.train,
          .batch_per_process = config.data.batch_size};
}

VqkdTrainSummary train_vqkd(const VqkdTrainConfig& config, const VqkdTrainOptions& options) {
  config.validate();
  const auto r = run_training(vqkd_run_spec(config), [&] { return make_vqkd_trainer(config); }, options);
  VqkdTrainSummary s;
  s.steps = r.steps;
  s.skipped_nonfinite = r.skipped_nonfinite;
  s.finished = r.finished;
  s.first_rec_loss = r.first_window.value("rec_loss", 0.0);
  s.last_rec_loss = r.last_window.value("rec_loss", 0.0);
  s.val_rec_loss = r.last_eval.value("val_rec_loss", -1.0);
  s.val_unused_codes = r.last_eval.value("val_unused_codes", int64_t{-1});
  if (r.finished) s.tokenizer = r.outputs.at(0);
  return s;
}

}  // namespace beitv2
