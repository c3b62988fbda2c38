#pragma once
// finetune-seg: UperNet semantic segmentation on a BEiT v2 backbone (docs/segmentation.md), on the shared loop.
//
//   data     ADE20K layout: <root>/images/{training,validation}/*.{jpg,png} with
//            <root>/annotations/{training,validation}/<same stem>.png (8-bit class ids; reduce_zero_label: 0 =
//            ignore, v -> v - 1), or any image folder + mask folder pair (layout folders) with an ignore index.
//            tools/prepare_fmnist_scenes.py writes the ADE20K layout.
//   train    mmseg's ADE20K pipeline: keep-ratio resize to img_scale x U(ratio_range), random crop (at most
//            cat_max_ratio of one class, 10 tries), flip 0.5, PhotoMetricDistortion, pad to the crop (image 0,
//            label ignore).
//   model    the ViT's blocks `out_indices` as maps -> FeaturePyramid -> UPerHead (+ FCNHead aux, weight 0.4);
//            the pyramid's modules live under `backbone.` as in the official checkpoints.
//   optim    layer-decay AdamW (pyramid and heads at scale 1), optim.schedule poly with linear warmup.
//   eval     keep-ratio resize to img_scale, sliding windows (crop, stride; a window is padded to the crop
//            when the image is smaller), logits resized to the label's original size; mIoU / mAcc / aAcc as
//            mmseg (models/segmentation.h).
//
// The label map rides in the batch as a second uint8 view (its value in every channel).

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "beitv2/models/segmentation.h"
#include "beitv2/models/vit.h"
#include "beitv2/train/finetune_trainer.h"
#include "beitv2/train/loop.h"

namespace beitv2 {

/// `model:` the backbone and the heads.
struct SegModelConfig {
  ViTConfig backbone;                        ///< the BEiT v2 ViT (preset or fields); img_size = the crop
  std::vector<int64_t> out_indices = {3, 5, 7, 11};  ///< blocks whose outputs feed the pyramid (0-based)
  int64_t channels = 768;                    ///< UPerHead channels
  int64_t aux_channels = 256;                ///< FCNHead channels
  int64_t num_classes = 150;
  std::vector<int64_t> pool_scales = {1, 2, 3, 6};
  double dropout = 0.1;
  double aux_loss_weight = 0.4;
  /// Train the pyramid and the heads only: the ViT's parameters keep their initial values and get no gradient
  /// (the frozen-backbone protocol, segmentation's analogue of linear probing; drop path off).
  bool freeze_backbone = false;

  template <class V>
  void visit(V& v) {
    v("backbone", backbone);
    v("out_indices", out_indices);
    v("channels", channels);
    v("aux_channels", aux_channels);
    v("num_classes", num_classes);
    v("pool_scales", pool_scales);
    v("dropout", dropout);
    v("aux_loss_weight", aux_loss_weight);
    v("freeze_backbone", freeze_backbone);
  }
  SegHeadConfig heads() const;
  void validate() const;
};

/// `data:` where the images and label maps are, and the training/test transforms.
///   layout ade20k   <root>/images/{training,validation}/* with <root>/annotations/{training,validation}/<stem>.png
///   layout folders  train_images/* with train_masks/<stem>.png, val_images/* with val_masks/<stem>.png
/// Label maps are 8-bit single-channel PNGs of class ids; `ignore_index` marks pixels without a label (after
/// reduce_zero_label when that is on). Any other value >= model.num_classes is an error naming the file.
struct SegDataConfig {
  std::string layout = "ade20k";             ///< "ade20k" | "folders"
  std::string root;                          ///< ade20k: holds images/ and annotations/
  std::string train_images, train_masks, val_images, val_masks;  ///< folders
  bool reduce_zero_label = true;             ///< ADE20K: label 0 is "other" -> ignore, v -> v - 1
  int64_t ignore_index = 255;                ///< label value without a class (0..255)
  std::vector<int64_t> img_scale = {2048, 512};  ///< keep-ratio bound (long side, short side)
  std::vector<double> ratio_range = {0.5, 2.0};  ///< training scale jitter
  int64_t crop_size = 512;                   ///< training crop and evaluation window (square)
  double cat_max_ratio = 0.75;               ///< random crop: at most this share of one class
  bool photometric = true;                   ///< mmseg's PhotoMetricDistortion (data/transforms.h)
  int64_t batch_size = 2;                    ///< per process (official: 2 x 8 GPUs)
  int64_t workers = 2;
  int64_t limit = 0;                         ///< use at most this many training images (0 = all)
  int64_t val_limit = 0;                     ///< evaluate at most this many validation images (0 = all)

  template <class V>
  void visit(V& v) {
    v("layout", layout);
    v("root", root);
    v("train_images", train_images);
    v("train_masks", train_masks);
    v("val_images", val_images);
    v("val_masks", val_masks);
    v("reduce_zero_label", reduce_zero_label);
    v("ignore_index", ignore_index);
    v("img_scale", img_scale);
    v("ratio_range", ratio_range);
    v("crop_size", crop_size);
    v("cat_max_ratio", cat_max_ratio);
    v("photometric", photometric);
    v("batch_size", batch_size);
    v("workers", workers);
    v("limit", limit);
    v("val_limit", val_limit);
  }
  void validate() const;
  /// (image folder, mask folder) of "training" or "validation" in this layout.
  std::pair<std::filesystem::path, std::filesystem::path> folders(const std::string& split) const;
};

/// An 8-bit single-channel label map as class ids with 255 = ignore: reduce_zero_label when set (0 -> ignore,
/// v -> v - 1, 255 stays), then `ignore_index` -> 255. Throws data::DecodeError naming the file for an unreadable
/// or multi-channel file, or a value >= num_classes that is not ignored.
cv::Mat read_seg_label(const std::filesystem::path& path, const SegDataConfig& d, int64_t num_classes);

/// `eval:` sliding-window inference (mmseg test_cfg mode 'slide').
struct SegEvalConfig {
  /// "slide": windows of data.crop_size every `stride`, logits averaged (the official recipes); "whole": one
  /// forward of the whole resized image (mmseg's 'whole'), which must fit the backbone's input (data.crop_size;
  /// a smaller image is padded to it) because the position tables are fixed, as in the official backbone.
  std::string mode = "slide";
  int64_t stride = 341;                      ///< window stride (the window is data.crop_size)
  bool only = false;                         ///< evaluate init.weights (e.g. a whole segmenter) and stop

  template <class V>
  void visit(V& v) {
    v("mode", mode);
    v("stride", stride);
    v("only", only);
  }
};

/// The whole finetune-seg config file.
struct SegConfig {
  SegModelConfig model;
  FinetuneInitConfig init;
  SegDataConfig data;
  SegEvalConfig eval;
  FinetuneOptimConfig optim = default_optim();
  TrainConfig train;

  static FinetuneOptimConfig default_optim();  ///< the official base recipe (pt1k): lr 5e-5, layer decay 0.75, poly
  template <class V>
  void visit(V& v) {
    v("model", model);
    v("init", init);
    v("data", data);
    v("eval", eval);
    v("optim", optim);
    v("train", train);
  }
  static SegConfig load(const std::string& file, const std::vector<std::string>& overrides = {});
  void validate() const;
  std::string to_yaml() const;
};

/// The segmenter: `backbone` (the ViT, with the pyramid's fpn1/fpn2 registered inside it, as officially),
/// `decode_head` (UPerHead), `auxiliary_head` (FCNHead).
class SegmenterImpl : public torch::nn::Module {
 public:
  explicit SegmenterImpl(const SegModelConfig& c);
  /// (B, 3, H, W) normalised, H and W = the backbone's img_size -> {logits at level 0, aux logits}.
  nn::SegmentationHeadsImpl::Output forward(const torch::Tensor& x);
  VisionTransformer backbone{nullptr};
  nn::FeaturePyramid pyramid{nullptr};
  nn::UPerHead decode_head{nullptr};
  nn::FCNHead auxiliary_head{nullptr};
  const SegModelConfig config;
};
TORCH_MODULE(Segmenter);

/// Window starts of mmseg's slide inference for one side: max(len - crop + stride - 1, 0) / stride + 1 windows
/// at i * stride, clipped so that each keeps `crop` where the image allows. Returns (start, end) pairs.
std::vector<std::pair<int64_t, int64_t>> slide_windows(int64_t length, int64_t crop, int64_t stride);

std::unique_ptr<Trainer> make_seg_trainer(const SegConfig& config);
RunSpec seg_run_spec(const SegConfig& config);

struct SegSummary {
  LoopSummary loop;   ///< empty with eval.only
  nlohmann::json eval = nlohmann::json::object();  ///< the last evaluation: mIoU, mAcc, aAcc (percent)
  double miou = -1;  ///< the last evaluation's mIoU, percent
  std::filesystem::path segmenter;  ///< segmenter.safetensors when finished
};
/// Trains (on the shared loop) and evaluates; with eval.only, evaluates init.weights on data's validation split
/// and returns (plots/segmentation.png written under train.out_dir).
SegSummary finetune_seg(const SegConfig& config, const LoopOptions& options = {});

}  // namespace beitv2
