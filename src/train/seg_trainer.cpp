// finetune-seg (include/beitv2/train/seg_trainer.h; docs/segmentation.md). References: microsoft/unilm
// beit2/semantic_segmentation (configs/beit/upernet/*, backbone/beit.py), open-mmlab/mmsegmentation 0.11
// (datasets/pipelines/transforms.py, models/segmentors/encoder_decoder.py).
#include "beitv2/train/seg_trainer.h"

#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <map>
#include <optional>

#include "beitv2/core/config_yaml.h"
#include "beitv2/core/log.h"
#include "beitv2/data/image.h"
#include "beitv2/data/transforms.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/train/batches.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/finetune_init.h"
#include "beitv2/train/optim.h"
#include "beitv2/train/plots.h"

namespace beitv2 {

// ---- config ----

SegHeadConfig SegModelConfig::heads() const {
  SegHeadConfig h;
  h.embed_dim = backbone.embed_dim;
  h.channels = channels;
  h.num_classes = num_classes;
  h.aux_channels = aux_channels;
  h.pool_scales = pool_scales;
  h.dropout = dropout;
  h.aux_loss_weight = aux_loss_weight;
  return h;
}

void SegModelConfig::validate() const {
  backbone.validate();
  if (out_indices.size() != 4) config_fail("model.out_indices", std::to_string(out_indices.size()) + " entries", "exactly 4 blocks");
  for (auto i : out_indices) {
    if (i < 0 || i >= backbone.depth) config_fail("model.out_indices", config_text(i), "a block in [0, depth)");
  }
  if (num_classes < 2) config_fail("model.num_classes", config_text(num_classes), "at least 2");
  if (channels <= 0 || aux_channels <= 0) config_fail("model.channels", config_text(channels), "positive");
  if (!(dropout >= 0 && dropout < 1)) config_fail("model.dropout", config_text(dropout), "in [0, 1)");
}

void SegDataConfig::validate() const {
  if (layout == "ade20k") {
    if (root.empty()) config_fail("data.root", "\"\"", "an ADE20K-layout folder (images/, annotations/) is required");
  } else if (layout == "folders") {
    for (const auto& [key, value] : {std::pair{"data.train_images", &train_images}, {"data.train_masks", &train_masks},
                                     {"data.val_images", &val_images}, {"data.val_masks", &val_masks}}) {
      if (value->empty()) config_fail(key, "\"\"", "a folder (data.layout is folders)");
    }
  } else {
    config_fail("data.layout", layout, "ade20k or folders");
  }
  if (ignore_index < 0 || ignore_index > 255) config_fail("data.ignore_index", config_text(ignore_index), "in [0, 255]");
  if (img_scale.size() != 2 || img_scale[0] <= 0 || img_scale[1] <= 0) {
    config_fail("data.img_scale", std::to_string(img_scale.size()) + " values", "[long side, short side], positive");
  }
  if (ratio_range.size() != 2 || !(ratio_range[0] > 0 && ratio_range[0] <= ratio_range[1])) {
    config_fail("data.ratio_range", std::to_string(ratio_range.size()) + " values", "[low, high] with 0 < low <= high");
  }
  if (crop_size <= 0) config_fail("data.crop_size", config_text(crop_size), "positive");
  if (!(cat_max_ratio > 0 && cat_max_ratio <= 1)) config_fail("data.cat_max_ratio", config_text(cat_max_ratio), "in (0, 1]");
  if (batch_size <= 0) config_fail("data.batch_size", config_text(batch_size), "positive");
}

std::pair<std::filesystem::path, std::filesystem::path> SegDataConfig::folders(const std::string& split) const {
  if (layout == "folders") {
    return split == "training" ? std::pair<std::filesystem::path, std::filesystem::path>{train_images, train_masks}
                               : std::pair<std::filesystem::path, std::filesystem::path>{val_images, val_masks};
  }
  return {std::filesystem::path(root) / "images" / split, std::filesystem::path(root) / "annotations" / split};
}

FinetuneOptimConfig SegConfig::default_optim() {
  // The official base recipe on pt1k weights (docs/reference.md §8; upernet_beit_base_12_512_slide_160k_ade20k_pt1k):
  // AdamW lr 5e-5, betas (0.9, 0.999), wd 0.05, layer decay 0.75, poly power 1 to 0, linear warmup over 1500
  // iterations from ratio 1e-6 (warmup_lr = 1e-6 x lr).
  FinetuneOptimConfig o;
  o.lr = 5e-5;
  o.scale_lr = false;
  o.min_lr = 0.0;
  o.warmup_lr = 5e-11;
  o.weight_decay = 0.05;
  o.layer_decay = 0.75;
  o.warmup_steps = 1500;
  o.schedule = "poly";
  return o;
}

SegConfig SegConfig::load(const std::string& file, const std::vector<std::string>& overrides) {
  return load_config<SegConfig>(file, overrides);
}

void SegConfig::validate() const {
  model.validate();
  init.validate();
  data.validate();
  optim.validate();
  train.validate();
  if (eval.stride <= 0) config_fail("eval.stride", config_text(eval.stride), "positive");
  if (eval.mode != "slide" && eval.mode != "whole") config_fail("eval.mode", eval.mode, "slide or whole");
  if (data.ignore_index < model.num_classes) {
    config_fail("data.ignore_index", config_text(data.ignore_index),
                "not a class id (model.num_classes is " + config_text(model.num_classes) + ")");
  }
  if (model.backbone.img_size != data.crop_size) {
    config_fail("model.backbone.img_size", config_text(model.backbone.img_size),
                "equal to data.crop_size (" + config_text(data.crop_size) + ")");
  }
}

std::string SegConfig::to_yaml() const { return beitv2::to_yaml(*this); }

// ---- model ----

SegmenterImpl::SegmenterImpl(const SegModelConfig& c) : config(c) {
  ViTConfig b = c.backbone;
  b.num_classes = 0;
  if (c.freeze_backbone) b.drop_path_rate = 0;
  backbone = register_module("backbone", VisionTransformer(b));
  // The official segmentation backbone has no final norm: its features are raw block outputs.
  for (const char* name : {"norm", "fc_norm"}) {
    if (backbone->named_children().contains(name)) backbone->unregister_module(name);
  }
  backbone->norm = nullptr;
  backbone->fc_norm = nullptr;
  pyramid = nn::FeaturePyramid(b.embed_dim);
  backbone->register_module("fpn1", pyramid->fpn1);  // official names: backbone.fpn1.*, backbone.fpn2.*
  backbone->register_module("fpn2", pyramid->fpn2);
  decode_head = register_module("decode_head", nn::UPerHead(c.heads()));
  auxiliary_head = register_module("auxiliary_head", nn::FCNHead(c.heads()));
  if (c.freeze_backbone) {
    for (auto& p : backbone->named_parameters()) {
      if (p.key().rfind("fpn", 0) != 0) p.value().set_requires_grad(false);
    }
  }
}

nn::SegmentationHeadsImpl::Output SegmenterImpl::forward(const torch::Tensor& x) {
  // forward_intermediates returns each requested block once, in block order.
  std::vector<int64_t> blocks = config.out_indices;
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  std::vector<torch::Tensor> inter;
  {
    std::optional<torch::NoGradGuard> frozen;  // no graph through a frozen ViT
    if (config.freeze_backbone) frozen.emplace();
    backbone->forward_intermediates(x, blocks, inter);
  }
  const int64_t g = config.backbone.grid_size();
  std::vector<torch::Tensor> maps;
  for (const auto i : config.out_indices) {  // (B, 1+N, D) -> (B, D, Hp, Wp), cls token dropped
    const auto& t = inter[static_cast<size_t>(std::find(blocks.begin(), blocks.end(), i) - blocks.begin())];
    maps.push_back(t.slice(1, 1).transpose(1, 2).reshape({t.size(0), t.size(2), g, g}));
  }
  nn::SegmentationHeadsImpl::Output o;
  o.levels = pyramid->forward(maps);
  o.logits = decode_head->forward(o.levels);
  o.aux_logits = auxiliary_head->forward(o.levels);
  return o;
}

std::vector<std::pair<int64_t, int64_t>> slide_windows(int64_t length, int64_t crop, int64_t stride) {
  const int64_t n = std::max<int64_t>(length - crop + stride - 1, 0) / stride + 1;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t end = std::min(i * stride + crop, length);
    out.emplace_back(std::max<int64_t>(end - crop, 0), end);
  }
  return out;
}

// ---- data ----

namespace {

namespace fs = std::filesystem;

struct Pair {
  fs::path image, label;
};

// The split's images, each paired with the mask of the same stem (.png); a missing mask is a ConfigError.
std::vector<Pair> list_pairs(const SegDataConfig& d, const std::string& split) {
  const auto [images, masks] = d.folders(split);
  const std::string key = d.layout == "folders" ? (split == "training" ? "data.train_images" : "data.val_images")
                                                : "data.root";
  if (!fs::is_directory(images)) config_fail(key, images.string(), "no such folder");
  std::vector<Pair> out;
  for (const auto& img : data::list_images(images)) {
    const auto lab = masks / (img.stem().string() + ".png");
    if (!fs::exists(lab)) config_fail(key, images.string(), "no label map " + lab.string() + " for " + img.string());
    out.push_back({img, lab});
  }
  if (out.empty()) config_fail(key, images.string(), "no images");
  return out;
}

}  // namespace

cv::Mat read_seg_label(const fs::path& path, const SegDataConfig& d, int64_t num_classes) {
  cv::Mat lab = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
  if (lab.empty() || lab.type() != CV_8UC1) throw data::DecodeError(path.string() + ": not an 8-bit single-channel PNG");
  cv::Mat lut(1, 256, CV_8U);
  for (int v = 0; v < 256; ++v) {
    int c = v;
    if (d.reduce_zero_label) c = v == 0 ? 255 : (v == 255 ? 255 : v - 1);  // mmseg: 0 -> 255, 255 stays
    if (c == d.ignore_index) c = 255;
    lut.at<uint8_t>(v) = static_cast<uint8_t>(c);
  }
  cv::LUT(lab, lut, lab);
  double max_value = 0;
  cv::minMaxLoc(lab, nullptr, &max_value, nullptr, nullptr, lab != 255);
  if (max_value >= static_cast<double>(num_classes)) {
    throw data::DecodeError(c10::str(path.string(), ": label ", static_cast<int>(max_value), " is not a class (",
                                     num_classes, " classes, ignore index ", d.ignore_index, ")"));
  }
  return lab;
}

namespace {

// mmcv.imrescale's keep-ratio size: the largest scale with long side <= long_max and short side <= short_max.
cv::Size rescaled(const cv::Size& s, double long_max, double short_max) {
  const double scale = std::min(long_max / std::max(s.width, s.height), short_max / std::min(s.width, s.height));
  return {static_cast<int>(s.width * scale + 0.5), static_cast<int>(s.height * scale + 0.5)};
}

cv::Mat three_channels(const cv::Mat& grey) {
  cv::Mat out;
  cv::cvtColor(grey, out, cv::COLOR_GRAY2RGB);
  return out;
}

// A pair's image (RGB) and label map (read_seg_label), which must be of one size.
std::pair<cv::Mat, cv::Mat> read_pair(const Pair& p, const SegDataConfig& d, int64_t num_classes) {
  cv::Mat img = data::decode_rgb(p.image), lab = read_seg_label(p.label, d, num_classes);
  if (img.size() != lab.size()) throw data::DecodeError(p.label.string() + ": size differs from its image");
  return {img, lab};
}

data::SampleFn train_sample_fn(std::vector<Pair> pairs, SegDataConfig d, int64_t num_classes) {
  return [pairs = std::move(pairs), d, num_classes](int64_t index, data::Rng& rng) {
    auto [img, lab] = read_pair(pairs[static_cast<size_t>(index)], d, num_classes);
    const double r = rng.uniform(d.ratio_range[0], d.ratio_range[1]);
    const auto size = rescaled(img.size(), d.img_scale[0] * r, d.img_scale[1] * r);
    cv::resize(img, img, size, 0, 0, cv::INTER_LINEAR);
    cv::resize(lab, lab, size, 0, 0, cv::INTER_NEAREST);
    // Random crop: at most cat_max_ratio of the crop in one class (ignore excluded), 10 tries (mmseg).
    const int c = static_cast<int>(d.crop_size);
    cv::Rect box(0, 0, std::min(c, img.cols), std::min(c, img.rows));
    for (int attempt = 0; attempt < 10; ++attempt) {
      box.x = static_cast<int>(rng.randint(0, std::max(img.cols - c, 0)));
      box.y = static_cast<int>(rng.randint(0, std::max(img.rows - c, 0)));
      if (d.cat_max_ratio >= 1) break;
      std::map<int, int> counts;
      cv::Mat crop = lab(box);
      for (int y = 0; y < crop.rows; ++y) {
        for (int x = 0; x < crop.cols; ++x) {
          if (const int v = crop.at<uint8_t>(y, x); v != 255) ++counts[v];
        }
      }
      int most = 0, total = 0;
      for (const auto& [k, n] : counts) most = std::max(most, n), total += n;
      if (counts.size() > 1 && most < d.cat_max_ratio * total) break;
    }
    img = img(box).clone();
    lab = lab(box).clone();
    if (rng.uniform() < 0.5) {
      cv::flip(img, img, 1);
      cv::flip(lab, lab, 1);
    }
    if (d.photometric) data::PhotoMetricDistortion{}.apply_(img, rng);
    // Pad to the crop: image 0, label ignore.
    cv::copyMakeBorder(img, img, 0, c - img.rows, 0, c - img.cols, cv::BORDER_CONSTANT, cv::Scalar(0, 0, 0));
    cv::copyMakeBorder(lab, lab, 0, c - lab.rows, 0, c - lab.cols, cv::BORDER_CONSTANT, cv::Scalar(255));
    data::Sample s;
    s.views = {img, three_channels(lab)};
    return s;
  };
}

// Evaluation: the image resized (keep ratio) to img_scale, the label at its original size.
data::SampleFn eval_sample_fn(std::vector<Pair> pairs, SegDataConfig d, int64_t num_classes) {
  return [pairs = std::move(pairs), d, num_classes](int64_t index, data::Rng&) {
    auto [img, lab] = read_pair(pairs[static_cast<size_t>(index)], d, num_classes);
    cv::resize(img, img, rescaled(img.size(), static_cast<double>(d.img_scale[0]), static_cast<double>(d.img_scale[1])),
               0, 0, cv::INTER_LINEAR);
    data::Sample s;
    s.views = {img, three_channels(lab)};
    return s;
  };
}

namespace F = torch::nn::functional;


// ---- the trainer ----

class SegTrainer : public Trainer {
 public:
  explicit SegTrainer(const SegConfig& cfg) : cfg_(cfg), device_(cfg.train.device == "cuda" ? torch::kCUDA : torch::kCPU) {
    const auto& d = cfg.data;
    auto train_pairs = list_pairs(d, "training");
    if (d.limit > 0 && static_cast<int64_t>(train_pairs.size()) > d.limit) train_pairs.resize(static_cast<size_t>(d.limit));
    val_pairs_ = list_pairs(d, "validation");
    if (d.val_limit > 0 && static_cast<int64_t>(val_pairs_.size()) > d.val_limit) val_pairs_.resize(static_cast<size_t>(d.val_limit));
    if (cfg.eval.mode == "whole") {  // before any training: the first validation image must fit the backbone
      const auto first = data::decode_rgb(val_pairs_.front().image).size();
      const auto size = rescaled(first, static_cast<double>(d.img_scale[0]), static_cast<double>(d.img_scale[1]));
      if (size.width > d.crop_size || size.height > d.crop_size) {
        config_fail("eval.mode", "whole", c10::str("images that fit the backbone's ", d.crop_size, "x", d.crop_size,
                                                   " input; ", val_pairs_.front().image.string(), " is ", size.width,
                                                   "x", size.height, " after data.img_scale (use slide)"));
      }
    }
    DataConfig dc;
    dc.workers = d.workers;
    dc.decode_errors = "fail";
    const auto n = static_cast<int64_t>(train_pairs.size());
    train_ = make_batch_source(n, train_sample_fn(std::move(train_pairs), d, cfg.model.num_classes),
                               loader_options(dc, /*train=*/true, cfg.train.seed, d.batch_size, dist::rank(), dist::world()));
    val_ = make_batch_source(static_cast<int64_t>(val_pairs_.size()), eval_sample_fn(val_pairs_, d, cfg.model.num_classes),
                             loader_options(dc, /*train=*/false, cfg.train.seed, 1));
    SegModelConfig mc = cfg.model;
    TensorMap weights;
    if (!cfg.init.weights.empty()) {
      if (!fs::is_regular_file(cfg.init.weights)) config_fail("init.weights", cfg.init.weights, "no such file");
      weights = read_safetensors(cfg.init.weights).tensors;
      if (weights.count("norm.weight")) mc.backbone.use_mean_pooling = false;  // a MIM backbone keeps its norm
    }
    // SyncBatchNorm: under c10d the BatchNorm statistics span every process's batch (mmseg's SyncBN).
    nn::set_batch_norm_sync(dist::active() ? nn::SumAcrossProcesses(dist::all_reduce_sum) : nullptr);
    torch::manual_seed(cfg.train.seed);
    model_ = Segmenter(mc);
    const bool whole = std::any_of(weights.begin(), weights.end(), [](const auto& kv) { return kv.first.rfind("decode_head.", 0) == 0; });
    if (whole) {
      // A whole segmenter (ours, or an official mmseg checkpoint converted by tools/convert_checkpoint.py):
      // strict, by the official names; the official relative_position_index buffers are recomputed here.
      TensorMap kept;
      for (auto& [k, v] : weights) {
        if (!k.ends_with(".relative_position_index")) kept.emplace(k, v);
      }
      for (const auto& b : model_->named_buffers()) {  // the file's copies (if any) are not trusted
        if (b.key().ends_with(".relative_position_index")) kept[b.key()] = b.value();
      }
      load_state_dict(*model_, kept, {}, cfg.init.weights);
      log::info(c10::str("initialised the whole segmenter from ", cfg.init.weights, " (", kept.size(), " tensors)"));
    } else if (!weights.empty()) {
      // The pretrained ViT is initialised on its own (official loading: shared table expanded per block, tables
      // and pos_embed resized to this grid), then copied into the backbone, whose fpn1/fpn2 keep their init.
      InitOptions io;
      io.kind = cfg.init.kind;
      io.allow_missing = cfg.init.allow_missing;
      io.allow_unexpected = cfg.init.allow_unexpected;
      ViTConfig b = mc.backbone;
      b.num_classes = 0;
      VisionTransformer vit(b);
      log::info(init_classifier(vit, weights, io, cfg.init.weights).to_string());
      auto from = state_dict(*vit);
      for (const auto& k : {"norm.weight", "norm.bias", "fc_norm.weight", "fc_norm.bias"}) from.erase(k);
      load_state_dict(*model_->backbone, from, {.skip_prefixes = {"fpn1.", "fpn2."}}, cfg.init.weights);
    } else {
      log::warn("finetune-seg from a RANDOM backbone (no init.weights): a baseline");
    }
    model_->to(device_);
    model_->train();
    // Layer decay over the backbone (VisionTransformer::layer_id_for); the pyramid and the heads at scale 1.
    const int64_t depth = cfg.model.backbone.depth;
    auto layer_id = [this, depth](const std::string& name) -> int64_t {
      if (name.rfind("backbone.", 0) == 0 && name.rfind("backbone.fpn", 0) != 0) return model_->backbone->layer_id_for(name.substr(9));
      return depth + 1;
    };
    std::set<std::string> no_decay;
    for (const auto& k : model_->backbone->no_weight_decay()) no_decay.insert("backbone." + k);
    groups_ = make_param_groups(*model_, cfg.optim.weight_decay, no_decay, layer_id, depth + 2, cfg.optim.layer_decay);
    opt_ = make_adamw(groups_, cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps);
  }

  torch::nn::Module& model() override { return *model_; }
  torch::optim::AdamW& optimizer() override { return *opt_; }
  const std::vector<ParamGroup>& param_groups() const override { return groups_; }
  BatchSource& batches() override { return *train_; }

  LossOutput forward_loss(const data::Batch& batch) override {
    auto x = data::normalize_images(batch.images.at(0).to(device_, true), data::kImagenetMean, data::kImagenetStd);
    auto label = batch.images.at(1).select(1, 0).to(device_, true).to(torch::kLong);  // (B, H, W)
    const auto out = model_->forward(x);
    const auto decode = seg_cross_entropy(out.logits, label);
    const auto aux = seg_cross_entropy(out.aux_logits, label, 255, cfg_.model.aux_loss_weight);
    torch::Tensor acc;
    {
      torch::NoGradGuard ng;
      const auto pred = resize_bilinear(out.logits, label.size(1), label.size(2)).argmax(1);
      const auto valid = label.ne(255);
      acc = pred.eq(label).logical_and(valid).sum().to(torch::kDouble) / valid.sum().clamp_min(1).to(torch::kDouble);
    }
    return {decode + aux, {{"loss_decode", decode.detach()}, {"loss_aux", aux.detach()}, {"acc_seg", acc}}};
  }

  // Logits of one window (1, 3, h, w) with h, w <= the crop: padded to the crop (the backbone's tables are
  // fixed), forwarded, resized to the crop and cut back to h x w.
  torch::Tensor window(const torch::Tensor& crop) {
    const int64_t c = cfg_.data.crop_size, h = crop.size(2), w = crop.size(3);
    TORCH_CHECK(h <= c && w <= c, "finetune-seg: a ", w, "x", h, " window is larger than the backbone's input");
    auto padded = F::pad(crop, F::PadFuncOptions({0, c - w, 0, c - h}));
    return resize_bilinear(model_->forward(padded).logits, c, c).slice(2, 0, h).slice(3, 0, w);
  }

  // Sliding-window logits of one resized image (1, 3, H, W) at its own size.
  torch::Tensor slide(const torch::Tensor& img) {
    const int64_t c = cfg_.data.crop_size, h = img.size(2), w = img.size(3);
    auto sum = torch::zeros({1, cfg_.model.num_classes, h, w}, img.options());
    auto count = torch::zeros({1, 1, h, w}, img.options());
    for (const auto& [y1, y2] : slide_windows(h, c, cfg_.eval.stride)) {
      for (const auto& [x1, x2] : slide_windows(w, c, cfg_.eval.stride)) {
        sum.slice(2, y1, y2).slice(3, x1, x2) += window(img.slice(2, y1, y2).slice(3, x1, x2));
        count.slice(2, y1, y2).slice(3, x1, x2) += 1;
      }
    }
    return sum / count;
  }

  nlohmann::json evaluate(int64_t epoch) override {
    model_->eval();
    torch::NoGradGuard ng;
    SegAreas areas;
    std::vector<torch::Tensor> shown_images, shown_labels, shown_preds;  // the first plot_images, for the figure
    val_->start_epoch(0, 0);
    while (auto batch = val_->next()) {
      auto x = data::normalize_images(batch->images.at(0).to(device_), data::kImagenetMean, data::kImagenetStd);
      const auto label = batch->images.at(1).select(1, 0);  // (1, H0, W0) at the original size
      for (int64_t i = 0; i < x.size(0); ++i) {
        const auto one = x.slice(0, i, i + 1);
        auto logits = resize_bilinear(cfg_.eval.mode == "whole" ? window(one) : slide(one), label.size(1), label.size(2));
        const auto pred = logits.argmax(1)[0].cpu();
        areas.add(SegAreas::of(pred, label[i], cfg_.model.num_classes));
        if (static_cast<int64_t>(shown_images.size()) < cfg_.train.plot_images) {  // the image at the label's size
          shown_images.push_back(resize_bilinear(batch->images.at(0).slice(0, i, i + 1).to(torch::kFloat),
                                                 label.size(1), label.size(2))[0].round().clamp(0, 255).to(torch::kUInt8));
          shown_labels.push_back(label[i]);
          shown_preds.push_back(pred);
        }
      }
    }
    model_->train();
    if (!shown_images.empty()) {
      const auto plots = std::filesystem::path(cfg_.train.out_dir) / "plots";
      const bool final = cfg_.train.final_epoch(epoch, train_->batches_per_epoch());
      for (const auto& png : plot_paths(plots, "segmentation", epoch, final, cfg_.train.eval_every)) {
        plot_segmentation(shown_images, shown_labels, shown_preds, png);
      }
    }
    const auto m = SegMetrics::of(areas);
    return {{"mIoU", 100 * m.miou}, {"mAcc", 100 * m.macc}, {"aAcc", 100 * m.aacc}};
  }

  std::vector<std::filesystem::path> outputs() const override {
    return {std::filesystem::path(cfg_.train.out_dir) / "segmenter.safetensors"};
  }

  std::vector<std::filesystem::path> finish(int64_t step) override {
    const auto out = outputs();
    save_weights(*model_, out[0], {{"format", "beitv2-segmenter"}, {"config", cfg_.to_yaml()}, {"steps", std::to_string(step)}});
    return out;
  }

  std::vector<std::pair<std::string, std::string>> describe() const override {
    return {{"model", c10::str("ViT width ", cfg_.model.backbone.embed_dim, " depth ", cfg_.model.backbone.depth,
                               " -> UperNet (", cfg_.model.channels, " ch, ", cfg_.model.num_classes, " classes)")},
            {"init", cfg_.init.weights.empty() ? std::string("random") : cfg_.init.weights},
            {"train", c10::str(train_->size(), " images from ", cfg_.data.folders("training").first.string())},
            {"val", cfg_.eval.mode == "whole" ? c10::str(val_pairs_.size(), " images, whole")
                                              : c10::str(val_pairs_.size(), " images, sliding windows ", cfg_.data.crop_size,
                                                         " / ", cfg_.eval.stride)}};
  }

 private:
  const SegConfig cfg_;
  torch::Device device_;
  std::vector<Pair> val_pairs_;
  std::unique_ptr<BatchSource> train_, val_;
  Segmenter model_{nullptr};
  std::vector<ParamGroup> groups_;
  std::unique_ptr<torch::optim::AdamW> opt_;
};

}  // namespace

std::unique_ptr<Trainer> make_seg_trainer(const SegConfig& config) {
  config.validate();
  return std::make_unique<SegTrainer>(config);
}

RunSpec seg_run_spec(const SegConfig& config) {
  return {.name = "finetune-seg", .config_yaml = config.to_yaml(), .optim = &config.optim, .train = &config.train,
          .batch_per_process = config.data.batch_size,
          .resume_breaking_keys = {"model.", "init.", "data.root", "data.batch_size", "data.limit", "train.seed"}};
}

SegSummary finetune_seg(const SegConfig& config, const LoopOptions& options) {
  config.validate();
  SegSummary s;
  if (config.eval.only) {
    if (config.init.weights.empty()) config_fail("eval.only", "true", "init.weights to evaluate");
    s.eval = make_seg_trainer(config)->evaluate(0);
    s.miou = s.eval.value("mIoU", -1.0);
    log::info(c10::str("evaluated ", config.init.weights, ": ", s.eval.dump()));
    return s;
  }
  s.loop = run_training(seg_run_spec(config), [&] { return make_seg_trainer(config); }, options);
  s.eval = s.loop.last_eval;
  s.miou = s.loop.last_eval.value("mIoU", -1.0);
  if (s.loop.finished && !s.loop.outputs.empty()) s.segmenter = s.loop.outputs.at(0);
  return s;
}

}  // namespace beitv2
