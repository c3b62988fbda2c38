// train-vqkd (SPEC.md §1.4, §2). Reference: microsoft/unilm beit2/engine_for_vqkd.py, run_vqkd_training.py.
// Divergences: the non-finite-loss policy (skip and count, stop after K in a row, keeping the last good
// checkpoint; the official script saves and exits on the first one), k-means on rank 0 + broadcast.
#include "beitv2/train/vqkd_trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <iomanip>
#include <sstream>
#include <thread>

#include "beitv2/core/autocast.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/models/vqkd.h"
#include "beitv2/teacher/teacher.h"
#include "beitv2/train/checkpoint.h"
#include "beitv2/train/optim.h"
#include "beitv2/train/plots.h"
#include "beitv2/train/run.h"
#include "beitv2/version.h"

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

std::string fixed(double v, int prec) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(prec) << v;
  return os.str();
}

std::string sci(double v) {
  std::ostringstream os;
  os << std::scientific << std::setprecision(2) << v;
  return os.str();
}

struct EvalResult {
  double loss = 0, quant_loss = 0, rec_loss = 0, perplexity = 0;
  int64_t unused_codes = 0, used_codes = 0, images = 0;
  torch::Tensor counts, first_images, first_ids;
};

EvalResult evaluate(VQKD& model, Teacher& teacher, ImageBatches& val, torch::Device device, int64_t keep_images) {
  EvalResult r;
  model->eval();
  model->quantize->reset_usage();  // official: usage counters restart for every evaluation
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> ids;
  val.run_epoch(0, 0, [&](int64_t, const torch::Tensor& images) {
    auto x = images.to(device);
    auto out = model->forward(x, teacher.targets(x.to(torch::kFloat32) / 255.0));
    const auto b = static_cast<double>(x.size(0));
    r.loss += out.loss.item<double>() * b;
    r.quant_loss += out.quant_loss.item<double>() * b;
    r.rec_loss += out.rec_loss.item<double>() * b;
    r.images += x.size(0);
    ids.push_back(out.indices.cpu());
    if (!r.first_images.defined() && keep_images > 0) {
      r.first_images = images.slice(0, 0, keep_images).cpu();
      r.first_ids = out.indices.slice(0, 0, keep_images).cpu();
    }
    return true;
  });
  if (r.images > 0) {
    r.loss /= r.images;
    r.quant_loss /= r.images;
    r.rec_loss /= r.images;
    auto usage = codebook_usage(torch::cat(ids), model->config().n_code);
    r.counts = usage.counts;
    r.perplexity = usage.perplexity;
    r.used_codes = usage.used;
  }
  r.unused_codes = model->quantize->unused_codes();
  model->train();
  return r;
}

}  // namespace

VqkdTrainSummary train_vqkd(const VqkdTrainConfig& cfg, const VqkdTrainOptions& opts) {
  cfg.validate();
  const auto& tc = cfg.train;
  const auto device = torch::Device(tc.device == "cuda" ? torch::kCUDA : torch::kCPU);
  if (device.is_cuda() && !torch::cuda::is_available()) {
    throw ConfigError("train.device = cuda: no CUDA device is available (this LibTorch: " +
                      std::string(TORCH_VERSION) + ")");
  }
  torch::set_num_threads(tc.threads > 0 ? static_cast<int>(tc.threads)
                                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const std::filesystem::path out_dir = tc.out_dir;

  // Everything that can fail on bad input fails here, before any training.
  CheckpointManager ckpt(out_dir, tc.keep_last);
  std::optional<std::filesystem::path> resume_dir;
  if (opts.resume == "auto") {
    resume_dir = ckpt.latest();
  } else if (!opts.resume.empty()) {
    resume_dir = opts.resume;
    if (!std::filesystem::is_directory(*resume_dir)) throw IoError(opts.resume + ": no such checkpoint directory");
  } else if (ckpt.latest()) {
    throw ConfigError(out_dir.string() + " already holds checkpoints: pass --resume auto to continue that run, "
                      "or choose another train.out_dir");
  }
  auto teacher = make_teacher(cfg.teacher, device, tc.seed);
  teacher->check_compatible(cfg.model);
  const int64_t size = cfg.model.encoder.img_size;
  auto train_data = make_vqkd_batches(cfg.data, size, /*train=*/true, tc.seed, cfg.data.batch_size);
  std::unique_ptr<ImageBatches> val_data;
  if (!cfg.data.val.empty()) {
    const int64_t vb = cfg.data.val_batch_size > 0 ? cfg.data.val_batch_size : cfg.data.batch_size * 3 / 2;
    val_data = make_vqkd_batches(cfg.data, size, /*train=*/false, tc.seed, vb);
  }
  const int64_t per_epoch = train_data->batches_per_epoch();
  if (per_epoch <= 0) {
    throw ConfigError("data.train = " + cfg.data.train + ": " + std::to_string(train_data->size()) +
                      " images, fewer than one batch of " + std::to_string(cfg.data.batch_size));
  }
  const int64_t total = tc.steps > 0 ? tc.steps : tc.epochs * per_epoch;
  const int64_t warmup = std::min(total, cfg.optim.warmup_steps >= 0 ? cfg.optim.warmup_steps
                                                                     : cfg.optim.warmup_epochs * per_epoch);
  const int64_t world = 1;
  const double lr = cfg.optim.lr * (cfg.optim.scale_lr ? static_cast<double>(cfg.data.batch_size * world) / 128.0 : 1.0);
  const auto lr_at = cosine_schedule(lr, cfg.optim.min_lr, total, warmup, cfg.optim.warmup_lr);

  torch::manual_seed(tc.seed);
  VQKD model(cfg.model);
  model->to(device);
  model->train();
  auto groups = make_param_groups(*model, cfg.optim.weight_decay, model->no_weight_decay());
  auto opt = make_adamw(groups, lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps);
  std::vector<torch::Tensor> trainable;
  for (const auto& g : groups) trainable.insert(trainable.end(), g.params.begin(), g.params.end());

  RunDir run(out_dir, cfg.to_yaml());
  int64_t step = 0, skipped = 0;
  if (resume_dir) {
    auto state = ckpt.load(*resume_dir, *model, *opt);
    step = state.at("step");
    skipped = state.value("skipped_nonfinite", 0);
    log::info(c10::str("resumed from ", resume_dir->string(), " at step ", step));
  }

  // Start-up table.
  std::ostringstream table;
  table << "\n  beitv2 " << kVersion << ", LibTorch " << TORCH_VERSION << ", device " << device << ", "
        << torch::get_num_threads() << " threads\n  teacher   " << teacher->info().to_string() << "\n  train     "
        << train_data->size() << " images from " << cfg.data.train << ", " << per_epoch << " steps/epoch\n  val       "
        << (val_data ? std::to_string(val_data->size()) + " images from " + cfg.data.val : std::string("none"))
        << "\n  schedule  " << total << " steps, warmup " << warmup << ", peak lr " << sci(lr) << " (base "
        << sci(cfg.optim.lr) << (cfg.optim.scale_lr ? " x batch/128" : "") << "), min lr " << sci(cfg.optim.min_lr)
        << "\n  run dir   " << out_dir.string() << "\n  config:\n";
  std::istringstream yaml(cfg.to_yaml());
  for (std::string line; std::getline(yaml, line);) table << "    " << line << "\n";
  log::info(table.str());
  if (teacher->info().random_init) log::warn("the teacher has RANDOM weights: a pipeline check, not a tokenizer");

  StopSignal::install();
  VqkdTrainSummary summary;
  Throughput meter;
  meter.start(step);
  int64_t consecutive_bad = 0, ran = 0;
  double win_loss = 0, win_rec = 0, win_quant = 0, win_gn = 0;
  int64_t win_n = 0;
  bool stop = false;
  auto save = [&]() {
    ckpt.save(step, *model, *opt, {{"step", step}, {"skipped_nonfinite", skipped}});
  };

  while (step < total && !stop) {
    const int64_t epoch = step / per_epoch;
    const int64_t first = step % per_epoch;
    if (first == 0) model->quantize->reset_usage();  // official: usage counters restart every epoch
    train_data->run_epoch(epoch, first, [&](int64_t, const torch::Tensor& images) {
      auto x = images.to(device, /*non_blocking=*/true);
      auto targets = teacher->targets(x.to(torch::kFloat32) / 255.0);
      apply_lr(*opt, groups, lr_at[step], cfg.optim.weight_decay);
      VqkdOutput out;
      {
        AutocastScope amp(tc.amp == "bf16" && device.is_cuda(), /*cuda=*/true);
        out = model->forward(x, targets);
      }
      const double loss = out.loss.item<double>();
      opt->zero_grad();
      double gn = 0;
      bool good = std::isfinite(loss);
      if (good) {
        out.loss.backward();
        gn = clip_grad_norm(trainable, cfg.optim.clip_grad);
        good = std::isfinite(gn);  // an overflowing gradient would poison the weights: skip it as well
      }
      if (!good) {
        opt->zero_grad();
        ++skipped;
        if (++consecutive_bad >= tc.max_nonfinite) {
          throw std::runtime_error(c10::str("stopping: ", consecutive_bad, " consecutive non-finite losses or ",
                                            "gradients at step ", step, "; the last good checkpoint in ",
                                            ckpt.dir().string(), " is intact (fix the cause, then --resume auto)"));
        }
        log::warn(c10::str("step ", step, ": non-finite loss ", loss, " or gradient norm ", gn, ", step skipped (",
                           consecutive_bad, " in a row)"));
      } else {
        consecutive_bad = 0;
        opt->step();
        win_loss += loss;
        win_rec += out.rec_loss.item<double>();
        win_quant += out.quant_loss.item<double>();
        win_gn += gn;
        ++win_n;
        if (ran == 0) summary.first_rec_loss = out.rec_loss.item<double>();
      }
      ++step;
      ++ran;
      if (step % tc.log_every == 0 || step == total) {
        const double n = std::max<int64_t>(1, win_n);
        const double ips = meter.images_per_s(step, x.size(0));
        log::info(c10::str("step ", step, "/", total, " ep ", epoch, " loss ", fixed(win_loss / n, 4), " rec ",
                           fixed(win_rec / n, 4), " quant ", fixed(win_quant / n, 4), " lr ", sci(lr_at[step - 1]),
                           " gn ", fixed(win_gn / n, 3), " | ", fixed(ips, 1), " img/s ETA ", meter.eta(step, total)));
        run.metrics({{"step", step}, {"epoch", epoch}, {"loss", win_loss / n}, {"rec_loss", win_rec / n},
                     {"quant_loss", win_quant / n}, {"lr", lr_at[step - 1]}, {"min_lr", cfg.optim.min_lr},
                     {"weight_decay", cfg.optim.weight_decay}, {"grad_norm", win_gn / n}, {"images_per_s", ips},
                     {"skipped_nonfinite", skipped}});
        summary.last_rec_loss = win_rec / n;
        win_loss = win_rec = win_quant = win_gn = 0;
        win_n = 0;
      }
      if (step % tc.save_every == 0 && consecutive_bad == 0) save();  // never save inside a bad streak
      if (StopSignal::requested() || (opts.stop_after > 0 && ran >= opts.stop_after)) {
        stop = true;
        return false;
      }
      return step < total;
    });
    if (stop) break;
    if (step % per_epoch == 0 || step == total) {  // epoch end
      const int64_t done_epoch = (step - 1) / per_epoch;
      const int64_t train_unused = model->quantize->unused_codes();
      nlohmann::json rec = {{"epoch", done_epoch}, {"step", step}, {"train_unused_codes", train_unused}};
      if (val_data) {
        auto ev = evaluate(model, *teacher, *val_data, device, tc.plot_images);
        rec.update({{"val_loss", ev.loss}, {"val_quant_loss", ev.quant_loss}, {"val_rec_loss", ev.rec_loss},
                    {"val_unused_codes", ev.unused_codes}, {"val_used_codes", ev.used_codes},
                    {"val_perplexity", ev.perplexity}});
        log::info(c10::str("epoch ", done_epoch, " val: loss ", fixed(ev.loss, 4), " rec ", fixed(ev.rec_loss, 4),
                           " quant ", fixed(ev.quant_loss, 4), ", codes used ", ev.used_codes, "/",
                           cfg.model.n_code, ", unused ", ev.unused_codes, ", perplexity ", fixed(ev.perplexity, 1)));
        summary.val_rec_loss = ev.rec_loss;
        summary.val_unused_codes = ev.unused_codes;
        const auto plots = out_dir / "plots";
        std::filesystem::create_directories(plots);
        if (ev.counts.defined()) {
          plot_codebook_usage(ev.counts, plots / ("codebook_usage_epoch_" + std::to_string(done_epoch) + ".png"),
                              "epoch " + std::to_string(done_epoch) + " (val)");
        }
        if (ev.first_images.defined()) {
          plot_token_maps(ev.first_images, ev.first_ids, cfg.model.encoder.grid_size(),
                          plots / ("token_map_epoch_" + std::to_string(done_epoch) + ".png"));
        }
      } else {
        log::info(c10::str("epoch ", done_epoch, ": train unused codes ", train_unused, "/", cfg.model.n_code));
      }
      run.metrics(rec);
      if (step % tc.save_every != 0) save();
    }
  }
  if (stop && step % tc.save_every != 0) save();
  summary.steps = step;
  summary.skipped_nonfinite = skipped;
  summary.finished = step >= total;
  if (summary.finished) {
    summary.tokenizer = out_dir / "tokenizer.safetensors";
    save_weights(*model, summary.tokenizer,
                 {{"format", "beitv2-tokenizer"}, {"config", cfg.model.to_yaml()}, {"steps", std::to_string(step)}});
    log::info("wrote " + summary.tokenizer.string());
  } else {
    log::info(c10::str("stopped at step ", step, "/", total, "; resume with --resume auto"));
  }
  return summary;
}

}  // namespace beitv2
