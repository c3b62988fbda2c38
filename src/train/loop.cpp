// The shared training loop (include/beitv2/train/loop.h; docs/adding_a_trainer.md). Read top to bottom:
// the update step, the log window, then run_training's sections: set-up, resume, start-up table, loop.
#include "beitv2/train/loop.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <iomanip>
#include <map>
#include <sstream>
#include <thread>

#include "beitv2/core/autocast.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/core/log.h"
#include "beitv2/train/checkpoint.h"
#include "beitv2/train/plots.h"
#include "beitv2/train/run.h"
#include "beitv2/version.h"

namespace beitv2 {

// ---- the update step ----

namespace {

// The tensors a forward may change besides what the optimizer updates: floating-point buffers and frozen
// parameters (the VQ-KD codebook and its EMA statistics, BatchNorm running stats).
std::vector<torch::Tensor> forward_state(torch::nn::Module& model) {
  std::vector<torch::Tensor> out;
  for (const auto& b : model.buffers(true)) {
    if (b.is_floating_point()) out.push_back(b);
  }
  for (const auto& p : model.parameters(true)) {
    if (!p.requires_grad()) out.push_back(p);
  }
  return out;
}

}  // namespace

StepStats train_step(Trainer& trainer, const data::Batch& batch, double lr, double weight_decay,
                     const OptimConfig& optim, const TrainConfig& train,
                     std::vector<std::pair<std::string, torch::Tensor>>* metrics, dist::GradReducer* reducer) {
  auto& opt = trainer.optimizer();
  const auto& groups = trainer.param_groups();
  apply_lr(opt, groups, lr, weight_decay);
  auto state = forward_state(trainer.model());
  std::vector<torch::Tensor> saved;
  {
    torch::NoGradGuard ng;
    saved.reserve(state.size());
    for (const auto& t : state) saved.push_back(t.clone());
  }
  LossOutput out;
  {
    AutocastScope amp(train.amp == "bf16" && train.device == "cuda", /*cuda=*/true);
    out = trainer.forward_loss(batch);
  }
  StepStats s;
  if (dist::active()) {  // the mean over processes: every rank takes the same decision below
    auto l = out.loss.detach().to(torch::kCPU, torch::kFloat64).reshape({1});
    dist::all_reduce_sum(l);
    s.loss = l.item<double>() / static_cast<double>(dist::world());
  } else {
    s.loss = out.loss.detach().item<double>();
  }
  opt.zero_grad();
  bool good = std::isfinite(s.loss);
  if (good) {
    if (reducer) reducer->prepare();
    out.loss.backward();
    if (reducer) reducer->finish();
    std::vector<torch::Tensor> params;
    for (const auto& g : groups) params.insert(params.end(), g.params.begin(), g.params.end());
    s.grad_norm = clip_grad_norm(params, optim.clip_grad);
    good = std::isfinite(s.grad_norm);  // an overflowing gradient would poison the weights
  }
  if (!good) {  // change nothing: no update, the forward's buffer updates undone
    opt.zero_grad();
    torch::NoGradGuard ng;
    for (size_t i = 0; i < state.size(); ++i) state[i].copy_(saved[i]);
    s.skipped = true;
    return s;
  }
  opt.step();
  trainer.after_update();
  if (metrics) {
    for (auto& [k, v] : out.metrics) metrics->emplace_back(k, v.detach());
  }
  return s;
}

// ---- formatting ----

std::string format_duration(double seconds) {
  const auto left = static_cast<int64_t>(std::max(0.0, seconds));
  char buf[32];
  if (left >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", static_cast<long>(left / 3600), static_cast<long>(left % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", static_cast<long>(left / 60), static_cast<long>(left % 60));
  }
  return buf;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string number(double v) {
  std::ostringstream os;
  if (v != 0 && (std::abs(v) < 1e-3 || std::abs(v) >= 1e6)) {
    os << std::scientific << std::setprecision(2) << v;
  } else {
    os << std::fixed << std::setprecision(std::abs(v) >= 100 ? 1 : 4) << v;
  }
  return os.str();
}

// "k v, k v" of a JSON record's numbers (skipping the bookkeeping keys).
std::string describe_record(const nlohmann::json& r) {
  std::string out;
  for (const auto& [k, v] : r.items()) {
    if (k == "epoch" || k == "step" || !v.is_number()) continue;
    if (!out.empty()) out += ", ";
    out += k + " " + (v.is_number_integer() ? std::to_string(v.get<int64_t>()) : number(v.get<double>()));
  }
  return out;
}

// The metrics of the steps since the window opened: sums as tensors (no host sync until it closes). Every
// process closes its window at the same step; the metrics are then averaged over the processes.
class Window {
 public:
  void add(const StepStats& s, std::vector<std::pair<std::string, torch::Tensor>>& metrics, int64_t images,
           double seconds, double comm_seconds) {
    ++steps_;
    seconds_ += seconds;
    comm_seconds_ += comm_seconds;
    if (s.skipped) {
      ++skipped_;
      return;
    }
    loss_ += s.loss;
    grad_norm_ += s.grad_norm;
    images_ += images;
    for (auto& [k, v] : metrics) {
      auto it = sums_.find(k);
      if (it == sums_.end()) {
        order_.push_back(k);
        sums_.emplace(k, v.to(torch::kFloat64));
      } else {
        it->second = it->second + v.to(torch::kFloat64);
      }
    }
  }
  int64_t steps() const { return steps_; }
  /// Time spent in the window's steps (batch wait + update; evaluation and checkpoints excluded).
  double seconds() const { return seconds_; }
  bool empty() const { return steps_ == skipped_; }

  /// The window's record: averages over its good steps (and over the processes). Only called on a non-empty
  /// window, by every process at once.
  nlohmann::json averages() const {
    const double n = static_cast<double>(steps_ - skipped_);
    nlohmann::json r = {{"loss", loss_ / n}};  // the loss is already the mean over processes
    std::vector<torch::Tensor> sums;
    for (const auto& k : order_) sums.push_back(sums_.at(k).reshape({1}));
    auto all = sums.empty() ? torch::zeros({0}, torch::kFloat64) : torch::cat(sums).cpu();
    dist::all_reduce_sum(all);
    all /= static_cast<double>(dist::world());
    for (size_t i = 0; i < order_.size(); ++i) {
      if (order_[i] != "loss") r[order_[i]] = all[static_cast<int64_t>(i)].item<double>() / n;
    }
    r["grad_norm"] = grad_norm_ / n;
    r["images_per_s"] = seconds() > 0 ? static_cast<double>(images_) / seconds() : 0.0;
    if (dist::active() && seconds() > 0) r["comm_share"] = comm_seconds_ / seconds();
    return r;
  }
  int64_t skipped() const { return skipped_; }

  void reset() { *this = Window(); }

 private:
  int64_t steps_ = 0, skipped_ = 0, images_ = 0;
  double seconds_ = 0, comm_seconds_ = 0, loss_ = 0, grad_norm_ = 0;
  std::vector<std::string> order_;
  std::map<std::string, torch::Tensor> sums_;
};

// Flattens a YAML document to "a.b.c" -> scalar text (sequences as their YAML text).
void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n) flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
  } else if (n.IsScalar()) {
    out[prefix] = n.as<std::string>();
  } else if (n.IsDefined() && !n.IsNull()) {
    YAML::Emitter e;
    e << YAML::Flow << n;
    out[prefix] = e.c_str();
  } else {
    out[prefix] = "";
  }
}

// Compares the config a checkpoint was made with to this invocation's: a change of a run-breaking key is an
// error unless forced; the others are logged.
void compare_configs(const std::string& before, const std::string& now, const std::vector<std::string>& breaking,
                     bool force) {
  if (before.empty() || before == now) return;
  std::map<std::string, std::string> a, b;
  flatten(YAML::Load(before), "", a);
  flatten(YAML::Load(now), "", b);
  std::vector<std::string> changes, fatal;
  for (const auto& [k, v] : b) {
    const auto it = a.find(k);
    const std::string old = it == a.end() ? "(absent)" : it->second;
    if (old == v) continue;
    const std::string line = k + ": " + old + " -> " + v;
    bool breaks = false;
    for (const auto& p : breaking) breaks = breaks || k.rfind(p, 0) == 0;
    (breaks ? fatal : changes).push_back(line);
  }
  for (const auto& [k, v] : a) {
    if (!b.count(k)) changes.push_back(k + ": " + v + " -> (absent)");
  }
  for (const auto& c : changes) log::info("resume: config changed: " + c);
  if (fatal.empty()) return;
  std::string list;
  for (const auto& f : fatal) list += (list.empty() ? "" : "; ") + f;
  if (!force) {
    throw ConfigError("resume would change the run itself (" + list +
                      "): start a new train.out_dir, or pass --force-resume to continue anyway");
  }
  log::warn("resume forced despite run-breaking config changes: " + list);
}

// plots/curves.png from metrics.jsonl, after evaluations and at the end; a figure that cannot be drawn is
// logged, never fatal.
void draw_curves(const std::filesystem::path& out_dir, const std::string& name) {
  try {
    std::filesystem::create_directories(out_dir / "plots");
    plot_metric_curves(out_dir / "metrics.jsonl", out_dir / "plots" / "curves.png", name + "  " + out_dir.string());
  } catch (const std::exception& e) {
    log::warn(std::string("could not draw plots/curves.png: ") + e.what());
  }
}

}  // namespace

// ---- the loop ----

LoopSummary run_training(const RunSpec& spec, const TrainerFactory& make_trainer, const LoopOptions& opts) {
  const TrainConfig& tc = *spec.train;
  const OptimConfig& oc = *spec.optim;
  tc.validate();
  oc.validate();

  // Set-up: device, threads, the process group, the run directory (locked by rank 0), the resume point, the
  // trainer.
  if (tc.device == "cuda" && !torch::cuda::is_available()) {
    throw ConfigError("train.device = cuda: no CUDA device is available (this LibTorch: " +
                      std::string(TORCH_VERSION) + ")");
  }
  torch::set_num_threads(tc.threads > 0 ? static_cast<int>(tc.threads)
                                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  dist::init_from_environment({.backend = tc.dist_backend, .timeout_s = tc.dist_timeout, .device = tc.device});
  const bool main = dist::is_main();
  const int64_t global_batch = spec.batch_per_process * dist::world();
  const std::filesystem::path out_dir = tc.out_dir;
  std::optional<RunDir> run;  // rank 0 alone writes the run directory's files
  if (main) {
    run.emplace(out_dir);
    run->open_logs();
  }
  CheckpointManager ckpt(out_dir, tc.keep_last);
  std::optional<std::filesystem::path> from;
  nlohmann::json manifest;  // of `from`, verified once here
  if (opts.resume == "auto") {
    from = ckpt.newest_verified(&manifest);
  } else if (!opts.resume.empty()) {
    from = opts.resume;
    if (!std::filesystem::is_directory(*from)) throw IoError(opts.resume + ": no such checkpoint directory");
    manifest = ckpt.verify(*from);
  } else if (!ckpt.candidates().empty()) {
    throw ConfigError(out_dir.string() + " already holds checkpoints: pass --resume auto to continue that run, "
                      "or choose another train.out_dir");
  }
  if (from) {
    // A checkpoint that records its global batch is checked on that (below), so that a run may resume with
    // another process count and the per-process batch that keeps the global one.
    auto breaking = spec.resume_breaking_keys;
    if (manifest.at("state").contains("global_batch")) std::erase(breaking, std::string("data.batch_size"));
    compare_configs(manifest.value("config", std::string()), spec.config_yaml, breaking, opts.force_resume);
  }
  auto trainer = make_trainer();
  auto& batches = trainer->batches();
  const int64_t per_epoch = batches.batches_per_epoch();
  if (per_epoch <= 0) {
    throw ConfigError(c10::str("data: ", batches.size(), " training images, fewer than one batch of ",
                               global_batch));
  }
  const int64_t total = tc.total_steps(per_epoch);
  const int64_t warmup_wanted = oc.warmup_steps >= 0 ? oc.warmup_steps : oc.warmup_epochs * per_epoch;
  const int64_t warmup = std::min(total, warmup_wanted);
  const double peak_lr = oc.lr * (oc.scale_lr ? static_cast<double>(global_batch) / 128.0 : 1.0);
  const auto lr_at = oc.schedule == "poly" ? poly_schedule(peak_lr, oc.min_lr, total, warmup, oc.warmup_lr)
                                           : cosine_schedule(peak_lr, oc.min_lr, total, warmup, oc.warmup_lr);

  LoopSummary summary;
  summary.total = total;
  int64_t step = 0;
  if (from) {
    TensorMap extra;
    ckpt.load(*from, trainer->model(), trainer->optimizer(), &manifest, &extra);
    trainer->load_extra_state(extra);
    step = manifest.at("step").get<int64_t>();
    const auto& st = manifest.at("state");
    summary.skipped_nonfinite = st.value("skipped_nonfinite", int64_t{0});
    if (step > total) {
      throw ConfigError(c10::str(from->string(), " is at step ", step, ", past this run's end (", total,
                                 " steps): raise train.steps / train.epochs or start a new train.out_dir"));
    }
    const int64_t saved_batch = st.value("global_batch", global_batch);
    if (saved_batch != global_batch) {
      const std::string what = c10::str("the global batch changed from ", saved_batch, " to ", global_batch,
                                        " (data.batch_size x processes): the data position and the schedule no "
                                        "longer line up");
      if (!opts.force_resume) throw ConfigError(what + "; keep batch_size x processes, or pass --force-resume");
      log::warn(what + " (forced)");
    }
  }
  // Every process starts from rank 0's weights and the same step; then each draws its own random numbers
  // (dropout, drop path): rank 0 keeps the checkpointed generator, the others derive theirs from (seed, rank,
  // step).
  dist::check_same(step, "the step to start from (do all ranks see the same train.out_dir?)");
  dist::broadcast_module(trainer->model());
  if (dist::rank() > 0) {
    torch::manual_seed(static_cast<uint64_t>(tc.seed) * 1000003u + static_cast<uint64_t>(dist::rank()) * 7919u +
                       static_cast<uint64_t>(step));
  }
  if (from && step >= total) {
    bool have_outputs = true;  // (a shared file system: every rank sees rank 0's outputs)
    for (const auto& f : trainer->outputs()) have_outputs = have_outputs && std::filesystem::exists(f);
    summary.steps = step;
    summary.finished = true;
    if (have_outputs) {
      log::info(c10::str(spec.name, ": ", out_dir.string(), " already finished at step ", step, "; nothing to do"));
      summary.already_finished = true;
      summary.outputs = trainer->outputs();
      return summary;
    }
  }
  if (run) run->write_config(spec.config_yaml);  // only now: a resume refused above leaves the old config
  if (from) log::info(c10::str("resumed from ", from->string(), " at step ", step));

  // Start-up table.
  std::ostringstream table;
  table << "\n  " << spec.name << " (beitv2 " << kVersion << ", LibTorch " << TORCH_VERSION << "), device "
        << tc.device << ", " << torch::get_num_threads() << " threads";
  if (dist::active()) table << " x " << dist::world() << " processes (" << dist::backend() << ")";
  table << "\n";
  for (const auto& [k, v] : trainer->describe()) table << "  " << std::left << std::setw(10) << k << v << "\n";
  table << "  schedule  " << total << " steps (" << per_epoch << "/epoch, global batch " << global_batch
        << "), warmup " << warmup << ", peak lr " << number(peak_lr) << " (base " << number(oc.lr)
        << (oc.scale_lr ? " x batch/128" : "") << "), min lr " << number(oc.min_lr) << "\n  run dir   "
        << out_dir.string() << "\n  config:\n";
  std::istringstream yaml(spec.config_yaml);
  for (std::string line; std::getline(yaml, line);) table << "    " << line << "\n";
  log::info(table.str());
  if (warmup_wanted >= total && total > 0 && warmup_wanted > 0) {
    log::warn(c10::str("warmup (", warmup_wanted, " steps) is as long as the run (", total,
                       " steps): the lr never reaches its peak and the decay never starts"));
  }

  // The loop.
  StopSignal::install();
  auto save = [&] {
    if (!main) return;
    ckpt.save(step, trainer->model(), trainer->optimizer(),
              {{"skipped_nonfinite", summary.skipped_nonfinite}, {"global_batch", global_batch}}, spec.config_yaml,
              trainer->extra_state());
  };
  std::unique_ptr<dist::GradReducer> reducer;
  if (dist::active()) {
    std::vector<torch::Tensor> params;
    for (const auto& g : trainer->param_groups()) params.insert(params.end(), g.params.begin(), g.params.end());
    reducer = std::make_unique<dist::GradReducer>(params);
  }
  dist::take_comm_seconds();
  const auto t_start = Clock::now();
  const int64_t step0 = step;
  int64_t consecutive_bad = 0, ran = 0, curves_step = -1;
  Window window;
  bool stop = false;
  while (step < total && !stop) {
    const int64_t epoch = step / per_epoch;
    if (step % per_epoch == 0) trainer->start_epoch(epoch);
    batches.start_epoch(epoch, step % per_epoch);
    while (step < total) {
      const auto t_step = Clock::now();
      auto batch = batches.next();
      if (!batch) throw std::runtime_error(c10::str("the data ended before batch ", step % per_epoch, " of epoch ", epoch));
      std::vector<std::pair<std::string, torch::Tensor>> metrics;
      const auto s = train_step(*trainer, *batch, lr_at[step], oc.weight_decay, oc, tc, &metrics, reducer.get());
      ++step;
      ++ran;
      if (s.skipped) {
        ++summary.skipped_nonfinite;
        if (++consecutive_bad >= tc.max_nonfinite) {
          const auto last = ckpt.latest();
          throw std::runtime_error(c10::str("stopping: ", consecutive_bad, " consecutive non-finite losses or ",
                                            "gradients at step ", step, "; ",
                                            last ? "the last good checkpoint " + last->string() + " is intact"
                                                 : std::string("no checkpoint was written"),
                                            " (fix the cause, then --resume auto)"));
        }
        log::warn(c10::str("step ", step, ": non-finite loss ", s.loss, " or gradient norm ", s.grad_norm,
                           ", step skipped, nothing changed (", consecutive_bad, " in a row)"));
      } else {
        consecutive_bad = 0;
      }
      stop = StopSignal::requested() || (opts.stop_after > 0 && ran >= opts.stop_after);
      bool log_due = window.seconds() + seconds_since(t_step) >= tc.log_seconds;
      if (dist::active()) {  // the processes agree on stopping and on a window closed by time
        auto flags = torch::tensor({stop ? 1.0 : 0.0, log_due ? 1.0 : 0.0}, torch::kFloat64);
        dist::all_reduce_sum(flags);
        stop = flags[0].item<double>() > 0;
        log_due = flags[1].item<double>() > 0;
      }
      window.add(s, metrics, batch->size() * dist::world(), seconds_since(t_step), dist::take_comm_seconds());
      const bool epoch_end = step % per_epoch == 0 || step == total;
      const bool evaluate = step == total || (epoch_end && (epoch + 1) % tc.eval_every == 0);

      // Log window: at multiples of log_every, by time, and always the first step of an invocation.
      if (step % tc.log_every == 0 || log_due || ran == 1 || step == total || stop) {
        const double elapsed = seconds_since(t_start);
        const std::string eta = format_duration(elapsed / static_cast<double>(step - step0) * static_cast<double>(total - step));
        if (window.empty()) {
          log::warn(c10::str("step ", step, "/", total, " ep ", epoch, ": all ", window.steps(),
                             " steps of this window were skipped (non-finite)"));
          if (run) {
            run->metrics({{"step", step}, {"epoch", epoch}, {"skipped_in_window", window.steps()},
                          {"skipped_nonfinite", summary.skipped_nonfinite}});
          }
        } else {
          auto r = window.averages();
          std::ostringstream line;
          line << "step " << step << "/" << total << " ep " << epoch;
          for (const auto& [k, v] : r.items()) {
            if (k != "images_per_s" && k != "grad_norm" && k != "comm_share") {
              line << " " << k << " " << number(v.get<double>());
            }
          }
          line << " lr " << number(lr_at[step - 1]) << " gn " << number(r["grad_norm"].get<double>()) << " | "
               << number(r["images_per_s"].get<double>()) << " img/s ETA " << eta;
          if (r.contains("comm_share")) line << " comm " << std::lround(100 * r["comm_share"].get<double>()) << "%";
          if (window.skipped() > 0) line << " (" << window.skipped() << " skipped)";
          log::info(line.str());
          r["step"] = step;
          r["epoch"] = epoch;
          r["lr"] = lr_at[step - 1];
          r["min_lr"] = oc.min_lr;
          r["weight_decay"] = oc.weight_decay;
          r["skipped_nonfinite"] = summary.skipped_nonfinite;
          if (run) run->metrics(r);
          if (summary.first_window.empty()) summary.first_window = r;
          summary.last_window = r;
        }
        window.reset();
      }

      // The trainer's evaluation every eval_every epochs and at the end (also when a stop lands there), on
      // rank 0 (the others go on to the next step's collectives and wait there).
      if (evaluate && main) {
        nlohmann::json rec = {{"epoch", epoch}, {"step", step}};
        rec.update(trainer->evaluate(epoch));
        log::info(c10::str("epoch ", epoch, ": ", describe_record(rec)));
        run->metrics(rec);
        summary.last_eval = rec;
        draw_curves(out_dir, spec.name);
        curves_step = step;
      }
      // Checkpoints: on cadence, after evaluations, on stop and at the end; never inside a bad streak.
      if (step % tc.save_every == 0 || evaluate || stop) {
        if (consecutive_bad == 0) {
          save();
        } else {
          log::warn(c10::str("not checkpointing at step ", step, " inside a streak of non-finite steps"));
        }
      }
      if (stop || epoch_end) break;
    }
  }
  if (main && ran > 0 && curves_step != step) draw_curves(out_dir, spec.name);
  summary.steps = step;
  summary.finished = step >= total;
  if (summary.finished) {
    summary.outputs = main ? trainer->finish(step) : trainer->outputs();
    dist::barrier();  // the outputs exist for every rank from here on
    for (const auto& f : summary.outputs) log::info("wrote " + f.string());
  } else {
    log::info(c10::str("stopped at step ", step, "/", total, "; resume with --resume auto"));
  }
  return summary;
}

}  // namespace beitv2
