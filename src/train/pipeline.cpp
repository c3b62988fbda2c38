// beitv2-pipeline (include/beitv2/train/pipeline.h): the stages in order, each skipped when its output exists,
// then the report.
#include "beitv2/train/pipeline.h"

#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>

#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"
#include "beitv2/train/batches.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/finetune_trainer.h"
#include "beitv2/train/linear_probe.h"
#include "beitv2/train/plots.h"
#include "beitv2/train/pretrain_trainer.h"
#include "beitv2/train/run.h"
#include "beitv2/train/vqkd_trainer.h"

namespace beitv2 {

PipelineConfig PipelineConfig::load(const std::string& file, const std::vector<std::string>& overrides) {
  return load_config<PipelineConfig>(file, overrides);
}

void PipelineConfig::validate() const {
  if (out_dir.empty()) config_fail("out_dir", "\"\"", "a run directory is required");
  const std::pair<const char*, const StageConfig*> stages[] = {
      {"teacher", &teacher}, {"tokenizer", &tokenizer}, {"pretrain", &pretrain}, {"probe", &probe}, {"finetune", &finetune}};
  for (const auto& [name, s] : stages) {
    if (s->config.empty()) config_fail(std::string(name) + ".config", "\"\"", "every stage needs its tool's config file");
    if (!std::filesystem::is_regular_file(s->config)) config_fail(std::string(name) + ".config", s->config, "no such file");
  }
}

std::string PipelineConfig::to_yaml() const { return beitv2::to_yaml(*this); }

namespace {

using Clock = std::chrono::steady_clock;

// The stages' directories under out_dir and the files that mark them done.
struct Layout {
  std::filesystem::path root;
  std::filesystem::path dir(const std::string& stage) const { return root / stage; }
  std::filesystem::path teacher() const { return root / "teacher" / "classifier.safetensors"; }
  std::filesystem::path tokenizer() const { return root / "tokenizer" / "tokenizer.safetensors"; }
  std::filesystem::path backbone() const { return root / "pretrain" / "backbone.safetensors"; }
};

struct Stage {
  std::string name;    // directory under out_dir and key in pipeline.json
  std::string title;   // what the report calls it
  std::filesystem::path output;
  std::function<bool(const LoopOptions&)> run;  // true = finished
};

// The stage file's overrides, then the pipeline's wiring.
std::vector<std::string> overrides(const StageConfig& s, std::vector<std::string> wiring) {
  std::vector<std::string> all = s.set;
  all.insert(all.end(), wiring.begin(), wiring.end());
  return all;
}

std::vector<std::string> data_wiring(const PipelineConfig& p) {
  std::vector<std::string> w;
  if (!p.train_data.empty()) w.push_back("data.train=" + config_text(p.train_data));
  if (!p.val_data.empty()) w.push_back("data.val=" + config_text(p.val_data));
  return w;
}

std::vector<std::string> train_wiring(const PipelineConfig& p, const std::filesystem::path& dir) {
  auto w = data_wiring(p);
  w.push_back("train.out_dir=" + config_text(dir.string()));
  w.push_back("train.seed=" + std::to_string(p.seed));
  return w;
}

// Loads a stage's config, naming the stage on an error.
template <class T>
T load_stage(const std::string& stage, const StageConfig& s, const std::vector<std::string>& wiring) {
  try {
    return T::load(s.config, overrides(s, wiring));
  } catch (const ConfigError& e) {
    throw ConfigError("stage " + stage + ": " + e.what());
  }
}

FinetuneConfig finetune_config(const PipelineConfig& p, const StageConfig& s, const std::filesystem::path& dir,
                               const std::string& init) {
  auto w = train_wiring(p, dir);
  w.push_back("init.weights=" + config_text(init));
  return load_stage<FinetuneConfig>(dir.filename().string(), s, w);
}

LinearProbeConfig probe_config(const PipelineConfig& p, const std::filesystem::path& dir, const std::string& init) {
  auto w = data_wiring(p);
  w.push_back("run.out_dir=" + config_text(dir.string()));
  w.push_back("run.seed=" + std::to_string(p.seed));
  w.push_back("init.weights=" + config_text(init));
  return load_stage<LinearProbeConfig>(dir.filename().string(), p.probe, w);
}

// The last record of a metrics.jsonl that has `key` ({} when none).
nlohmann::json last_record_with(const std::filesystem::path& jsonl, const std::string& key) {
  nlohmann::json found = nlohmann::json::object();
  std::ifstream in(jsonl);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains(key)) found = std::move(j);
  }
  return found;
}

// The best row of a probe_results.tsv: "top1" and "setting".
std::pair<double, std::string> best_probe(const std::filesystem::path& tsv) {
  std::ifstream in(tsv);
  std::string header, row;
  std::getline(in, header);
  if (!std::getline(in, row)) throw IoError(tsv.string() + ": no results");
  std::istringstream is(row);
  std::string block, pooling, lr, top1;
  std::getline(is, block, '\t');
  std::getline(is, pooling, '\t');
  std::getline(is, lr, '\t');
  std::getline(is, top1, '\t');
  std::string where = "block " + block;
  if (block == "-1") where = "output";
  if (block.size() > 1 && block[0] == '-' && block != "-1") where = "last " + block.substr(1) + " blocks";
  if (pooling == "pixels") where = "pixels";
  else where += ", " + pooling;
  return {std::stod(top1), where + ", lr " + lr};
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

// ---- the report ----

struct ReportInput {
  const PipelineConfig& config;
  Layout layout;
  const nlohmann::json& state;  // pipeline.json: seconds per stage
  const FinetuneConfig& teacher;
  const VqkdTrainConfig& tokenizer;
  const PretrainConfig& pretrain;
  const LinearProbeConfig& probe;
  const FinetuneConfig& finetune;
};

std::string vit_text(const ViTConfig& m) {
  return c10::str("width ", m.embed_dim, ", depth ", m.depth, ", ", m.num_heads, " heads, ", m.img_size, "px / patch ",
                  m.patch_size, " (", m.grid_size(), "x", m.grid_size(), " grid)");
}

std::string budget_text(const TrainConfig& t, int64_t batch) {
  return t.steps > 0 ? c10::str(t.steps, " steps x batch ", batch) : c10::str(t.epochs, " epochs x batch ", batch);
}

std::string setup_table(const ReportInput& in) {
  std::ostringstream t;
  const auto& tok = in.tokenizer.model;
  const auto& pt = in.pretrain;
  const auto& pr = in.probe.probe;
  const auto& ft = in.finetune;
  t << "| stage | model | budget |\n|---|---|---|\n";
  t << "| teacher | plain ViT, " << vit_text(in.teacher.model) << " | "
    << budget_text(in.teacher.train, in.teacher.data.batch_size) << ", lr " << in.teacher.optim.lr << " |\n";
  t << "| tokenizer | encoder " << vit_text(tok.encoder) << "; " << tok.n_code << " codes of dim " << tok.code_dim
    << "; decoder depth " << tok.decoder.depth << " | " << budget_text(in.tokenizer.train, in.tokenizer.data.batch_size)
    << " |\n";
  t << "| BEiT v2 | " << vit_text(pt.model.backbone) << ", CLS head on block " << pt.model.early_layers << "'s patches; "
    << pt.mask.num_patches << " of " << pt.model.backbone.num_patches() << " patches masked | "
    << budget_text(pt.train, pt.data.batch_size) << " |\n";
  t << "| linear probes | BatchNorm + linear on frozen features (blocks " << config_text(pr.blocks) << ", "
    << pr.poolings << "; lrs " << config_text(pr.lrs) << "), the best head on the test set | " << pr.epochs
    << " epochs x batch " << pr.batch_size << " |\n";
  t << "| fine-tuning (c), (d) | " << vit_text(ft.model) << ", layer decay " << ft.optim.layer_decay << " | "
    << budget_text(ft.train, ft.data.batch_size) << ", lr " << ft.optim.lr << " |\n";
  return t.str();
}

double probe_top1(const ReportInput& in, const std::string& stage) {
  return best_probe(in.layout.dir(stage) / "probe_results.tsv").first;
}

double eval_value(const ReportInput& in, const std::string& stage, const std::string& key) {
  return last_record_with(in.layout.dir(stage) / "metrics.jsonl", key).value(key, 0.0);
}

// What the table says, in sentences, against the targets of docs/pipeline.md.
std::string findings(const ReportInput& in) {
  const double a = probe_top1(in, "probe_random"), b = probe_top1(in, "probe_beitv2"),
               e = probe_top1(in, "probe_teacher"), f = probe_top1(in, "probe_pixels");
  const double c = eval_value(in, "finetune_scratch", "val_acc1"), d = eval_value(in, "finetune_beitv2", "val_acc1");
  const auto tok = last_record_with(in.layout.dir("tokenizer") / "metrics.jsonl", "val_used_codes");
  const double used = tok.value("val_used_codes", 0.0), n = used + tok.value("val_unused_codes", 0.0);
  std::ostringstream s;
  s << "- BEiT v2 pretraining makes the frozen features " << fixed(b - a, 1)
    << " points better for a linear classifier than a random backbone's ((b) - (a); target >= 10).\n";
  s << "- With the same fine-tuning budget, starting from BEiT v2 gives " << fixed(d - c, 1)
    << " points over starting from scratch ((d) - (c); target >= 0).\n";
  s << "- The raw pixels probe to " << fixed(f, 1) << "%: the BEiT v2 features are " << fixed(std::abs(b - f), 1)
    << " points " << (b >= f ? "above" : "below") << " them; the teacher's features, which BEiT v2 learns through "
    << "the tokenizer, probe to " << fixed(e, 1) << "%.\n";
  s << "- The tokenizer uses " << fixed(100 * used / std::max(1.0, n), 1) << "% of its codebook on the test images "
    << "(target >= 90%).\n";
  return s.str();
}

// The fine-tuned model's confusion matrix on the validation images.
void confusion_figure(const ReportInput& in, const std::filesystem::path& png) {
  const auto ds = open_image_folder("data.val", in.finetune.data.val);
  const auto preds = predict(in.layout.dir("finetune_beitv2") / "classifier.safetensors", ds, 1,
                             in.finetune.augment.crop_pct, in.finetune.data.val_batch_size);
  const int64_t k = ds->num_classes();
  auto counts = torch::zeros({k, k}, torch::kInt64);
  auto acc = counts.accessor<int64_t, 2>();
  for (const auto& p : preds) acc[ds->label(p.index)][p.labels.at(0)] += 1;
  plot_confusion_matrix(counts, ds->class_names(), png, "(d) fine-tuned from BEiT v2, test images");
}

std::string figure(const std::string& caption, const std::filesystem::path& root, const std::string& rel) {
  if (!std::filesystem::exists(root / rel)) return "";
  return "**" + caption + "**\n\n![" + caption + "](" + rel + ")\n\n";
}

std::string report_text(const ReportInput& in, const std::string& table) {
  const auto& r = in.layout.root;
  std::ostringstream m;
  m << "# BEiT v2 end to end: the pipeline report\n\n";
  m << "Written by `beitv2-pipeline` (seed " << in.config.seed << ", " << at::get_num_threads()
    << " threads, LibTorch " << TORCH_VERSION << "); the run's files are beside this report, one directory per "
    << "stage.\n\n## Results\n\n" << table << "\n" << findings(in) << "\n";
  m << "Probe figures are the best head of each grid measured on the test images (the DINOv2 practice, on the test "
       "set here: there is no separate validation split), so they are slightly optimistic, equally for (a), (b), "
       "(e) and (f).\n\n";
  m << "## Setup\n\n" << setup_table(in) << "\n";
  m << "## Figures\n\n";
  for (const char* stage : {"teacher", "tokenizer", "pretrain", "finetune_scratch", "finetune_beitv2"}) {
    m << figure(std::string("Training curves: ") + stage, r, std::string(stage) + "/plots/curves.png");
  }
  m << figure("Tokenizer: codebook usage on the test images", r, "tokenizer/plots/codebook_usage.png");
  m << figure("Tokenizer: token maps of test images (one colour per code)", r, "tokenizer/plots/token_map.png");
  m << figure("Masked image modelling on test images (green: right, red: wrong)", r, "pretrain/plots/mim.png");
  m << figure("Confusion matrix of (d)", r, "confusion_finetune_beitv2.png");
  return m.str();
}

std::string stage_time(const ReportInput& in, const std::string& stage) {
  const auto& s = in.state["stages"];
  return s.contains(stage) ? format_duration(s[stage].value("seconds", 0.0)) : "-";
}

std::string results_table(const ReportInput& in) {
  const auto& L = in.layout;
  auto eval = [&](const std::string& stage, const std::string& key) {
    return last_record_with(L.dir(stage) / "metrics.jsonl", key);
  };
  std::ostringstream t;
  t << "| stage | result | wall time |\n|---|---|---|\n";
  const auto teacher = eval("teacher", "val_acc1");
  t << "| teacher (supervised ViT, stands in for CLIP) | top-1 " << fixed(teacher.value("val_acc1", 0.0), 2)
    << "% | " << stage_time(in, "teacher") << " |\n";
  const auto tok = eval("tokenizer", "val_used_codes");
  const int64_t used = tok.value("val_used_codes", int64_t{0}), unused = tok.value("val_unused_codes", int64_t{0});
  t << "| tokenizer (VQ-KD) | codebook usage " << used << "/" << used + unused << " ("
    << fixed(100.0 * static_cast<double>(used) / static_cast<double>(std::max<int64_t>(1, used + unused)), 1)
    << "%), perplexity " << fixed(tok.value("val_perplexity", 0.0), 1) << ", val rec loss "
    << fixed(tok.value("val_rec_loss", 0.0), 4) << " | " << stage_time(in, "tokenizer") << " |\n";
  const auto mim = eval("pretrain", "val_mlm_acc_1");
  t << "| BEiT v2 pretraining | val MIM accuracy " << fixed(100 * mim.value("val_mlm_acc_1", 0.0), 2)
    << "% (last layer), " << fixed(100 * mim.value("val_mlm_acc_2", 0.0), 2) << "% (CLS head) | "
    << stage_time(in, "pretrain") << " |\n";
  const std::pair<const char*, const char*> probes[] = {{"probe_random", "(a) linear probe, random backbone"},
                                                        {"probe_beitv2", "(b) linear probe, BEiT v2"},
                                                        {"probe_teacher", "(e) linear probe, teacher"},
                                                        {"probe_pixels", "(f) linear probe, raw pixels"}};
  for (const auto& [stage, title] : probes) {
    const auto [top1, setting] = best_probe(L.dir(stage) / "probe_results.tsv");
    t << "| " << title << " | top-1 " << fixed(top1, 2) << "% (" << setting << ") | " << stage_time(in, stage) << " |\n";
  }
  const std::pair<const char*, const char*> fts[] = {{"finetune_scratch", "(c) fine-tune from scratch"},
                                                     {"finetune_beitv2", "(d) fine-tune from BEiT v2"}};
  for (const auto& [stage, title] : fts) {
    const auto r = eval(stage, "val_acc1");
    t << "| " << title << " | top-1 " << fixed(r.value("val_acc1", 0.0), 2) << "% (best epoch "
      << fixed(r.value("best_acc1", 0.0), 2) << "%) | " << stage_time(in, stage) << " |\n";
  }
  double total = 0;
  for (const auto& [k, v] : in.state["stages"].items()) total += v.value("seconds", 0.0);
  t << "| **whole pipeline** | | **" << format_duration(total) << "** |\n";
  return t.str();
}

}  // namespace

PipelineSummary run_pipeline(const PipelineConfig& cfg, const LoopOptions& options) {
  cfg.validate();
  if (dist::env_from().world > 1) {
    throw ConfigError("beitv2-pipeline runs as one process (its report and stage bookkeeping are not shared); "
                      "launch the stage tools (train-vqkd, pretrain-beitv2, ...) under torchrun or srun instead");
  }
  StopSignal::install();
  const Layout L{cfg.out_dir};
  RunDir run(L.root);
  run.write_config(cfg.to_yaml());
  run.open_logs();
  const auto state_file = L.root / "pipeline.json";
  nlohmann::json state = nlohmann::json::object();
  if (std::filesystem::exists(state_file)) state = nlohmann::json::parse(read_file(state_file));
  if (!state.contains("stages")) state["stages"] = nlohmann::json::object();

  // Every stage's config is loaded now, so that a mistake in the last one shows before the first trains.
  const auto teacher_cfg = load_stage<FinetuneConfig>("teacher", cfg.teacher, train_wiring(cfg, L.dir("teacher")));
  auto tok_wiring = train_wiring(cfg, L.dir("tokenizer"));
  tok_wiring.insert(tok_wiring.end(), {"teacher.kind=native", "teacher.path=" + config_text(L.teacher().string())});
  const auto tokenizer_cfg = load_stage<VqkdTrainConfig>("tokenizer", cfg.tokenizer, tok_wiring);
  auto pt_wiring = train_wiring(cfg, L.dir("pretrain"));
  pt_wiring.push_back("tokenizer.path=" + config_text(L.tokenizer().string()));
  const auto pretrain_cfg = load_stage<PretrainConfig>("pretrain", cfg.pretrain, pt_wiring);
  const auto probe_random = probe_config(cfg, L.dir("probe_random"), "");
  const auto probe_beitv2 = probe_config(cfg, L.dir("probe_beitv2"), L.backbone().string());
  auto probe_teacher = probe_config(cfg, L.dir("probe_teacher"), L.teacher().string());
  auto probe_pixels = probe_config(cfg, L.dir("probe_pixels"), "");
  probe_pixels.probe.blocks = {-1};
  probe_pixels.probe.poolings = "pixels";
  const auto ft_scratch = finetune_config(cfg, cfg.finetune, L.dir("finetune_scratch"), "");
  const auto ft_beitv2 = finetune_config(cfg, cfg.finetune, L.dir("finetune_beitv2"), L.backbone().string());
  {  // the backbones that meet must have one shape
    const auto& b = pretrain_cfg.model.backbone;
    for (const auto* m : {&probe_random.model, &ft_beitv2.model}) {
      if (m->img_size != b.img_size || m->patch_size != b.patch_size || m->embed_dim != b.embed_dim ||
          m->depth != b.depth || m->num_heads != b.num_heads) {
        throw ConfigError(c10::str("the probe (", cfg.probe.config, ") and fine-tune (", cfg.finetune.config,
                                   ") models must have the pretrained backbone's shape (", cfg.pretrain.config, ": ",
                                   b.img_size, "px, patch ", b.patch_size, ", width ", b.embed_dim, ", depth ",
                                   b.depth, ", ", b.num_heads, " heads)"));
      }
    }
  }

  std::vector<Stage> stages = {
      {"teacher", "teacher", L.teacher(),
       [&](const LoopOptions& o) { return finetune(teacher_cfg, o).finished; }},
      {"tokenizer", "tokenizer", L.tokenizer(),
       [&](const LoopOptions& o) {
         auto c = tokenizer_cfg;
         c.teacher.native_model = classifier_model_config(L.teacher());
         c.validate();
         return train_vqkd(c, o).finished;
       }},
      {"pretrain", "BEiT v2 pretraining", L.backbone(),
       [&](const LoopOptions& o) { return pretrain_beitv2(pretrain_cfg, o).loop.finished; }},
      {"probe_pixels", "(f) probe: raw pixels", L.dir("probe_pixels") / "probe_results.tsv",
       [&](const LoopOptions&) { return !linear_probe(probe_pixels).empty(); }},
      {"probe_random", "(a) probe: random backbone", L.dir("probe_random") / "probe_results.tsv",
       [&](const LoopOptions&) { return !linear_probe(probe_random).empty(); }},
      {"probe_teacher", "(e) probe: teacher", L.dir("probe_teacher") / "probe_results.tsv",
       [&](const LoopOptions&) {
         auto c = probe_teacher;
         c.model = classifier_model_config(L.teacher());
         return !linear_probe(c).empty();
       }},
      {"probe_beitv2", "(b) probe: BEiT v2", L.dir("probe_beitv2") / "probe_results.tsv",
       [&](const LoopOptions&) { return !linear_probe(probe_beitv2).empty(); }},
      {"finetune_scratch", "(c) fine-tune from scratch", L.dir("finetune_scratch") / "classifier.safetensors",
       [&](const LoopOptions& o) { return finetune(ft_scratch, o).finished; }},
      {"finetune_beitv2", "(d) fine-tune from BEiT v2", L.dir("finetune_beitv2") / "classifier.safetensors",
       [&](const LoopOptions& o) { return finetune(ft_beitv2, o).finished; }},
  };

  PipelineSummary summary;
  LoopOptions o = options;
  o.resume = "auto";
  for (auto& s : stages) {
    if (std::filesystem::exists(s.output)) {
      log::info("pipeline: " + s.name + " done (" + s.output.string() + ")");
      continue;
    }
    if (StopSignal::requested()) {
      summary.stopped_in = s.name;
      return summary;
    }
    log::info("pipeline: " + s.name + " (" + s.title + ") -> " + L.dir(s.name).string());
    const auto t0 = Clock::now();
    bool finished = false;
    try {
      finished = s.run(o);
    } catch (const std::exception& e) {
      throw std::runtime_error("stage " + s.name + ": " + e.what());
    }
    auto& rec = state["stages"][s.name];
    if (!rec.is_object()) rec = nlohmann::json::object();
    rec["seconds"] = rec.value("seconds", 0.0) + std::chrono::duration<double>(Clock::now() - t0).count();
    rec["runs"] = rec.value("runs", 0) + 1;
    write_file_atomic(state_file, state.dump(2) + "\n");
    if (!finished) {
      summary.stopped_in = s.name;
      log::info("pipeline: stopped in stage " + s.name + "; the same command resumes it");
      return summary;
    }
    o.stop_after = 0;  // --stop-after is for the first trainer that runs
  }

  const ReportInput in{cfg, L, state, teacher_cfg, tokenizer_cfg, pretrain_cfg, probe_beitv2, ft_beitv2};
  summary.table = results_table(in);
  confusion_figure(in, L.root / "confusion_finetune_beitv2.png");
  summary.report = L.root / "report.md";
  write_file_atomic(summary.report, report_text(in, summary.table));
  summary.finished = true;
  return summary;
}

}  // namespace beitv2
