// linear-probe-beitv2 (include/beitv2/train/linear_probe.h). Protocol after MAE's main_linprobe.py (BatchNorm
// without affine + linear head N(0, 0.01), LARS with momentum 0.9, wd 0, lr x batch/256, warmup + cosine,
// optionally RandomResizedCrop + flip training views) and DINOv2's grid of heads over cached features; the
// official BEiT v2 repo has none (docs/reference.md §5).
#include "beitv2/train/linear_probe.h"

#include <torch/torch.h>

#include <fstream>
#include <iomanip>
#include <sstream>
#include <thread>

#include "beitv2/core/config_yaml.h"
#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"
#include "beitv2/data/dataset.h"
#include "beitv2/data/image.h"
#include "beitv2/data/pipelines.h"
#include "beitv2/io/safetensors.h"
#include "beitv2/train/batches.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/finetune_init.h"
#include "beitv2/train/optim.h"

namespace beitv2 {

void ProbeConfig::validate() const {
  if (blocks.empty()) config_fail("probe.blocks", "[]", "give at least one block (-1 = the backbone output)");
  if (lrs.empty()) config_fail("probe.lrs", "[]", "give at least one lr");
  for (double lr : lrs) {
    if (!(lr > 0)) config_fail("probe.lrs", config_text(lr), "every lr must be positive");
  }
  std::stringstream ss(poolings);
  for (std::string p; std::getline(ss, p, ',');) {
    if (p != "cls" && p != "mean" && p != "pixels") {
      config_fail("probe.poolings", poolings, "a comma-separated list of cls, mean, pixels");
    }
  }
  if (epochs <= 0) config_fail("probe.epochs", config_text(epochs), "must be positive");
  if (warmup_epochs < 0 || warmup_epochs > epochs) config_fail("probe.warmup_epochs", config_text(warmup_epochs), "must be in [0, epochs]");
  if (batch_size <= 0) config_fail("probe.batch_size", config_text(batch_size), "must be positive");
  if (!(crop_pct > 0 && crop_pct <= 1)) config_fail("probe.crop_pct", config_text(crop_pct), "must be in (0, 1]");
  if (optimizer != "lars" && optimizer != "sgd") config_fail("probe.optimizer", optimizer, "lars or sgd");
  if (!(momentum >= 0 && momentum < 1)) config_fail("probe.momentum", config_text(momentum), "must be in [0, 1)");
  if (!(weight_decay >= 0)) config_fail("probe.weight_decay", config_text(weight_decay), "must be >= 0");
}

LinearProbeConfig LinearProbeConfig::load(const std::string& file, const std::vector<std::string>& overrides) {
  return load_config<LinearProbeConfig>(file, overrides);
}

void LinearProbeConfig::validate() const {
  model.validate();
  init.validate();
  data.validate();
  probe.validate();
  if (run.device != "cpu" && run.device != "cuda") config_fail("run.device", run.device, "cpu or cuda");
  for (auto b : probe.blocks) {
    if (b < -model.depth || b >= model.depth) {
      config_fail("probe.blocks", config_text(b),
                  c10::str("must be in [-", model.depth, ", ", model.depth, "): -1 the output, -n the last n blocks "
                           "concatenated, i >= 0 block i"));
    }
  }
}

std::string LinearProbeConfig::to_yaml() const { return beitv2::to_yaml(*this); }

namespace {

std::vector<std::string> split_poolings(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string p; std::getline(ss, p, ',');) out.push_back(p);
  return out;
}

// The evaluation view: Resize(size / crop_pct) + CenterCrop.
data::SampleFn eval_view(const std::shared_ptr<const data::ImageDataset>& ds, const LinearProbeConfig& c) {
  data::EvalTransform t;
  t.crop = static_cast<int>(c.model.img_size);
  t.crop_pct = c.probe.crop_pct;
  t.interpolation = data::parse_interpolation(c.data.interpolation);
  return data::eval_sample_fn(ds, t);
}

// MAE's linear-probe training view (main_linprobe.py): RandomResizedCrop(size, (min_crop_scale, 1)) + flip 0.5.
data::SampleFn augmented_view(const std::shared_ptr<const data::ImageDataset>& ds, const LinearProbeConfig& c) {
  data::TrainTransform t;
  t.crop.size = static_cast<int>(c.model.img_size);
  t.crop.scale = {c.data.min_crop_scale, 1.0};
  t.crop.interpolation = data::parse_interpolation(c.data.interpolation);
  t.hflip = 0.5;
  return data::train_sample_fn(ds, t);
}

// Features of every image of `ds` (in dataset order, views drawn for `epoch`) for every (block, pooling), and the
// labels.
std::vector<torch::Tensor> extract(VisionTransformer& model, const std::shared_ptr<const data::ImageDataset>& ds,
                                   data::SampleFn view, int64_t epoch, const LinearProbeConfig& c,
                                   torch::Device device, torch::Tensor& labels) {
  // In order, every image; several processes each extract their shard (padded by wrapping to equal sizes).
  data::Loader loader(ds->size(), std::move(view),
                      loader_options(c.data, /*train=*/false, c.run.seed, c.data.batch_size, dist::rank(), dist::world()));
  const auto poolings = split_poolings(c.probe.poolings);
  // Blocks whose outputs are needed: i >= 0 itself, -n (n >= 2) the last n (DINOv2's n_last_blocks).
  std::vector<int64_t> inner;
  auto need = [&](int64_t i) {
    if (std::find(inner.begin(), inner.end(), i) == inner.end()) inner.push_back(i);
  };
  for (auto b : c.probe.blocks) {
    if (b >= 0) need(b);
    for (int64_t i = c.model.depth + b; b <= -2 && i < c.model.depth; ++i) need(i);
  }
  auto output_of = [&](const std::vector<torch::Tensor>& inter, int64_t i) {
    return inter[std::find(inner.begin(), inner.end(), i) - inner.begin()];
  };
  const bool backbone = std::any_of(poolings.begin(), poolings.end(), [](const auto& p) { return p != "pixels"; });
  std::vector<std::vector<torch::Tensor>> parts(c.probe.blocks.size() * poolings.size());
  std::vector<torch::Tensor> ys;
  torch::NoGradGuard ng;
  loader.start_epoch(epoch, 0);
  while (auto batch = loader.next()) {
    auto x = data::normalize_images(batch->images.at(0).to(device), data::kImagenetMean, data::kImagenetStd);
    std::vector<torch::Tensor> inter;
    const auto out = backbone ? model->forward_intermediates(x, inner, inter) : torch::Tensor();  // B, 1+N, D
    size_t k = 0;
    for (auto b : c.probe.blocks) {
      std::vector<torch::Tensor> tokens;  // one (B, 1+N, D) per block pooled (several for b <= -2)
      if (!backbone || b == -1) {
        tokens = {out};
      } else if (b >= 0) {
        tokens = {output_of(inter, b)};
      } else {  // the last -b blocks, each through the final norm when the backbone has one (DINOv2)
        for (int64_t i = c.model.depth + b; i < c.model.depth; ++i) {
          tokens.push_back(model->norm ? model->norm->forward(output_of(inter, i)) : output_of(inter, i));
        }
      }
      for (const auto& p : poolings) {
        std::vector<torch::Tensor> f;
        for (const auto& t : tokens) {
          if (p == "pixels") {
            f.push_back(x.flatten(1));  // the baseline: the normalised evaluation view itself
          } else if (p == "cls") {
            f.push_back(t.select(1, 0));
          } else if (b == -1 && model->fc_norm) {
            f.push_back(model->forward_head(t, /*pre_logits=*/true));  // fc_norm(mean of patch tokens)
          } else {
            f.push_back(t.slice(1, 1).mean(1));
          }
          if (p == "pixels") break;
        }
        parts[k++].push_back(torch::cat(f, 1).to(torch::kFloat32));
      }
    }
    ys.push_back(batch->labels.to(device));
  }
  labels = torch::cat(ys);
  std::vector<torch::Tensor> feats;
  for (auto& p : parts) feats.push_back(torch::cat(p));
  if (dist::active()) {  // every process gets every image, in dataset order (rank r held positions r, r + N, ...)
    dist::check_same(labels.size(0), "the number of images extracted (a skipped unreadable image?)");
    auto unshard = [&](const torch::Tensor& t) {  // (world, M, ...) -> (M * world, ...), padding dropped
      return dist::all_gather(t).transpose(0, 1).flatten(0, 1).slice(0, 0, ds->size());
    };
    labels = unshard(labels);
    for (auto& f : feats) f = unshard(f);
  }
  return feats;
}

}  // namespace

std::vector<ProbeResult> linear_probe(const LinearProbeConfig& cfg) {
  cfg.validate();
  const torch::Device device(cfg.run.device == "cuda" ? torch::kCUDA : torch::kCPU);
  torch::set_num_threads(cfg.run.threads > 0 ? static_cast<int>(cfg.run.threads)
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  // Several processes (train/dist.h) split the feature extraction; every one then trains the same heads on
  // all the features, and rank 0 writes the files.
  dist::init_from_environment({.device = cfg.run.device});
  const bool main = dist::is_main();
  const std::filesystem::path out = cfg.run.out_dir;
  std::filesystem::create_directories(out);
  if (main) write_file_atomic(out / "config.yaml", cfg.to_yaml());
  auto train_set = open_image_folder("data.train", cfg.data.train);
  auto val_set = open_image_folder("data.val", cfg.data.val);
  if (val_set->class_names() != train_set->class_names()) {
    config_fail("data.val", cfg.data.val, "its class folders differ from data.train's");
  }
  const int64_t classes = train_set->num_classes();

  // The frozen backbone: no head; a weights file with a final `norm` (a MIM backbone) keeps it.
  ViTConfig mc = cfg.model;
  mc.num_classes = 0;
  mc.drop_path_rate = 0;
  TensorMap weights;
  if (!cfg.init.weights.empty()) {
    if (!std::filesystem::is_regular_file(cfg.init.weights)) config_fail("init.weights", cfg.init.weights, "no such file");
    weights = read_safetensors(cfg.init.weights).tensors;
    if (weights.count("norm.weight")) mc.use_mean_pooling = false;
  }
  torch::manual_seed(cfg.run.seed);
  VisionTransformer model(mc);
  if (!cfg.init.weights.empty()) {
    InitOptions io;
    io.kind = cfg.init.kind;
    io.allow_missing = cfg.init.allow_missing;
    io.allow_unexpected = cfg.init.allow_unexpected;
    log::info(init_classifier(model, weights, io, cfg.init.weights).to_string());
  } else if (cfg.probe.poolings != "pixels") {
    log::warn("linear probe of a RANDOM backbone (no init.weights): a baseline");
  }
  model->to(device);
  model->eval();
  for (auto& p : model->parameters()) p.set_requires_grad(false);

  torch::Tensor ytrain, yval;
  const auto train_view = cfg.probe.augment ? augmented_view(train_set, cfg) : eval_view(train_set, cfg);
  auto ftrain = extract(model, train_set, train_view, 0, cfg, device, ytrain);
  auto fval = extract(model, val_set, eval_view(val_set, cfg), 0, cfg, device, yval);
  log::info(c10::str("features: ", ftrain.size(), " sets, ", ytrain.size(0), " train / ", yval.size(0), " val images; ",
                     cfg.probe.augment ? "training views RandomResizedCrop + flip, extracted again every epoch"
                                       : "evaluation view, extracted once",
                     "; heads trained with ", cfg.probe.optimizer));

  // One head per (feature set, lr), all on the same minibatches.
  struct Head {
    size_t set = 0;
    double lr = 0;
    torch::nn::Sequential net{nullptr};
    std::unique_ptr<torch::optim::Optimizer> opt;
  };
  const auto poolings = split_poolings(cfg.probe.poolings);
  std::vector<Head> heads;
  for (size_t s = 0; s < ftrain.size(); ++s) {
    for (double lr : cfg.probe.lrs) {
      Head h;
      h.set = s;
      h.lr = lr;
      const int64_t d = ftrain[s].size(1);
      torch::nn::Linear fc(d, classes);
      {
        torch::NoGradGuard ng;
        fc->weight.normal_(0.0, 0.01);
        fc->bias.zero_();
      }
      h.net = torch::nn::Sequential(torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(d).affine(false).eps(1e-6)), fc);
      h.net->to(device);
      if (cfg.probe.optimizer == "lars") {
        h.opt = std::make_unique<Lars>(
            h.net->parameters(), LarsOptions(lr).momentum(cfg.probe.momentum).weight_decay(cfg.probe.weight_decay));
      } else {
        h.opt = std::make_unique<torch::optim::SGD>(
            h.net->parameters(),
            torch::optim::SGDOptions(lr).momentum(cfg.probe.momentum).weight_decay(cfg.probe.weight_decay));
      }
      heads.push_back(std::move(h));
    }
  }
  const int64_t n = ytrain.size(0);
  const int64_t bs = std::min(cfg.probe.batch_size, n);
  const int64_t per_epoch = n / bs;
  const int64_t total = per_epoch * cfg.probe.epochs;
  const auto schedule = cosine_schedule(1.0, 0.0, total, std::min(total, per_epoch * cfg.probe.warmup_epochs));
  const double scale = static_cast<double>(bs) / 256.0;
  int64_t step = 0;
  for (int64_t e = 0; e < cfg.probe.epochs; ++e) {
    if (cfg.probe.augment && e > 0) ftrain = extract(model, train_set, train_view, e, cfg, device, ytrain);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cfg.run.seed * 1000003 + e));
    const auto perm = torch::randperm(n, gen).to(device);
    for (int64_t b = 0; b < per_epoch; ++b, ++step) {
      const auto idx = perm.slice(0, b * bs, (b + 1) * bs);
      const auto y = ytrain.index_select(0, idx);
      for (auto& h : heads) {
        for (auto& g : h.opt->param_groups()) g.options().set_lr(h.lr * scale * schedule[step]);
        const auto logits = h.net->forward(ftrain[h.set].index_select(0, idx));
        const auto loss = torch::nn::functional::cross_entropy(logits, y);
        h.opt->zero_grad();
        loss.backward();
        h.opt->step();
      }
    }
  }

  std::vector<ProbeResult> results;
  std::ofstream metrics;
  if (main) metrics.open(out / "metrics.jsonl", std::ios::app);
  torch::NoGradGuard ng;
  for (auto& h : heads) {
    h.net->eval();
    const auto pred = h.net->forward(fval[h.set]).argmax(1);
    ProbeResult r;
    r.block = cfg.probe.blocks[h.set / poolings.size()];
    r.pooling = poolings[h.set % poolings.size()];
    r.lr = h.lr;
    r.top1 = 100.0 * pred.eq(yval).to(torch::kFloat64).mean().item<double>();
    metrics << nlohmann::json{{"block", r.block}, {"pooling", r.pooling}, {"lr", r.lr}, {"top1", r.top1}}.dump() << "\n";
    results.push_back(r);
  }
  std::sort(results.begin(), results.end(), [](const ProbeResult& a, const ProbeResult& b) { return a.top1 > b.top1; });
  std::ostringstream tsv;
  tsv << "block\tpooling\tlr\ttop1\n";
  for (const auto& r : results) {
    tsv << r.block << "\t" << r.pooling << "\t" << r.lr << "\t" << std::fixed << std::setprecision(2) << r.top1
        << std::defaultfloat << "\n";
  }
  if (main) write_file_atomic(out / "probe_results.tsv", tsv.str());
  log::info(c10::str("linear probe: best top-1 ", results.front().top1, "% (block ", results.front().block, ", ",
                     results.front().pooling, ", lr ", results.front().lr, "); table in ",
                     (out / "probe_results.tsv").string()));
  return results;
}

}  // namespace beitv2
