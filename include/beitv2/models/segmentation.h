#pragma once
// Semantic segmentation on a BEiT v2 backbone (docs/segmentation.md; docs/reference.md §8): the 4-level feature
// pyramid the official segmentation backbone builds from four blocks' outputs, mmseg 0.11's UPerHead and
// FCNHead (auxiliary), their loss, and mmseg's metrics. Module and parameter names are the official ones
// (mmcv ConvModule = conv/bn, `backbone.fpn*`, `decode_head.*`, `auxiliary_head.*`), so an official ADE20K
// checkpoint's heads load strictly. References: microsoft/unilm beit2/semantic_segmentation/backbone/beit.py
// (the pyramid), open-mmlab/mmsegmentation 0.11 mmseg/models/decode_heads/{uper_head,psp_head,fcn_head,
// decode_head}.py and mmseg/core/evaluation/metrics.py; the plain-PyTorch rendering is
// tests/reference/seg_ref.py.
//
// BatchNorm is SyncBatchNorm: per process unless set_batch_norm_sync gives it a sum across processes (the
// trainer does under c10d), then training statistics span every process's batch, as torch.nn.SyncBatchNorm.

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace beitv2 {

/// The heads' sizes (the official base recipe's values as defaults).
struct SegHeadConfig {
  int64_t embed_dim = 768;                     ///< backbone width D (the pyramid keeps it)
  int64_t channels = 768;                      ///< UPerHead channels (1024 large)
  int64_t num_classes = 150;                   ///< ADE20K
  int64_t aux_channels = 256;                  ///< FCNHead channels
  std::vector<int64_t> pool_scales = {1, 2, 3, 6};
  double dropout = 0.1;                        ///< Dropout2d before each conv_seg
  int64_t aux_in_index = 2;                    ///< the pyramid level the auxiliary head reads (the 1x one)
  double aux_loss_weight = 0.4;
};

namespace nn {

/// Sums a tensor over all processes in place (dist::all_reduce_sum); empty = one process.
using SumAcrossProcesses = std::function<void(torch::Tensor&)>;
/// Process-wide: SyncBatchNorm modules in training mode take their statistics over every process's batch.
void set_batch_norm_sync(SumAcrossProcesses sum);

/// BatchNorm2d with torch.nn.SyncBatchNorm's semantics when set_batch_norm_sync is set and the module trains:
/// mean and biased variance over the global batch (per-channel sums and counts all-reduced), running statistics
/// updated with the global unbiased variance, and in backward the sums of dy and dy * x_hat all-reduced as well,
/// so that P processes of B images step as one of P x B (parameter gradients stay local and are averaged with
/// the others). Otherwise plain BatchNorm2d. Same parameters and buffers, computed in float32.
class SyncBatchNormImpl : public torch::nn::BatchNorm2dImpl {
 public:
  using torch::nn::BatchNorm2dImpl::BatchNorm2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(SyncBatchNorm);

/// mmcv ConvModule with BN and ReLU: conv (no bias) -> BatchNorm2d -> ReLU; names conv.weight, bn.*. Init
/// kaiming normal (fan_out, relu), BN weight 1, bias 0.
class ConvModuleImpl : public torch::nn::Module {
 public:
  ConvModuleImpl(int64_t in, int64_t out, int64_t kernel, int64_t padding = 0);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  SyncBatchNorm bn{nullptr};
};
TORCH_MODULE(ConvModule);

/// fpn1: ConvTranspose2d(2, stride 2) -> BN -> GELU -> ConvTranspose2d (4x); fpn2: ConvTranspose2d (2x);
/// fpn3: identity; fpn4: MaxPool2d(2) (1/2x, floor). Input: four (B, D, Hp, Wp) maps.
class FeaturePyramidImpl : public torch::nn::Module {
 public:
  explicit FeaturePyramidImpl(int64_t embed_dim);
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& features);
  torch::nn::Sequential fpn1{nullptr}, fpn2{nullptr};
};
TORCH_MODULE(FeaturePyramid);

/// What every mmseg head ends with: Dropout2d(p) -> conv_seg (1x1, bias; init normal std 0.01, bias 0).
/// `dropout_mask` (B, C, 1, 1) of 0 or 1/(1-p), when defined, replaces the random draw in training mode (tests).
class DecodeHeadBase : public torch::nn::Module {
 public:
  DecodeHeadBase(int64_t channels, int64_t num_classes, double dropout);
  torch::Tensor cls_seg(const torch::Tensor& feature);
  torch::nn::Conv2d conv_seg{nullptr};
  torch::Tensor dropout_mask;

 private:
  double dropout_;
};

/// mmseg 0.11 UPerHead over the four pyramid levels: PPM + `bottleneck` on level 3, 1x1 `lateral_convs` on
/// levels 0-2, top-down adds, 3x3 `fpn_convs`, all levels at level 0's size concatenated -> `fpn_bottleneck`
/// -> cls_seg. Logits at level 0's resolution.
class UPerHeadImpl : public DecodeHeadBase {
 public:
  explicit UPerHeadImpl(const SegHeadConfig& c);
  torch::Tensor forward(const std::vector<torch::Tensor>& levels);
  torch::nn::ModuleList psp_modules{nullptr};  // each Sequential(AdaptiveAvgPool2d(s), ConvModule 1x1)
  ConvModule bottleneck{nullptr}, fpn_bottleneck{nullptr};
  torch::nn::ModuleList lateral_convs{nullptr}, fpn_convs{nullptr};
};
TORCH_MODULE(UPerHead);

/// mmseg 0.11 FCNHead as the BEiT v2 auxiliary head: one 3x3 ConvModule (`convs.0`) on level aux_in_index ->
/// cls_seg.
class FCNHeadImpl : public DecodeHeadBase {
 public:
  explicit FCNHeadImpl(const SegHeadConfig& c);
  torch::Tensor forward(const std::vector<torch::Tensor>& levels);
  torch::nn::Sequential convs{nullptr};

 private:
  int64_t in_index_;
};
TORCH_MODULE(FCNHead);

/// The trainable part of the segmenter besides the ViT, under mmseg's EncoderDecoder prefixes: `backbone`
/// (the pyramid, which lives in the backbone module officially), `decode_head`, `auxiliary_head`.
class SegmentationHeadsImpl : public torch::nn::Module {
 public:
  explicit SegmentationHeadsImpl(const SegHeadConfig& c);
  struct Output {
    std::vector<torch::Tensor> levels;
    torch::Tensor logits;      ///< UPerHead, at level 0's resolution
    torch::Tensor aux_logits;  ///< FCNHead, at level aux_in_index's resolution
  };
  Output forward(const std::vector<torch::Tensor>& features);
  FeaturePyramid backbone{nullptr};
  UPerHead decode_head{nullptr};
  FCNHead auxiliary_head{nullptr};
  const SegHeadConfig config;
};
TORCH_MODULE(SegmentationHeads);

}  // namespace nn

/// mmseg's `resize`: bilinear, align_corners false, of a (B, C, H, W) map to (height, width).
torch::Tensor resize_bilinear(const torch::Tensor& x, int64_t height, int64_t width);

/// mmseg 0.11's segmentation loss: logits resized (bilinear, align_corners false) to the label's size, per-pixel
/// cross entropy with `ignore_index`, then the mean over ALL pixels (ignored ones add 0 but count), times
/// `weight`. `label` (B, H, W) int64.
torch::Tensor seg_cross_entropy(const torch::Tensor& logits, const torch::Tensor& label, int64_t ignore_index = 255,
                                double weight = 1.0);

/// Per-class pixel areas (mmseg intersect_and_union), summed over images with `add`.
struct SegAreas {
  torch::Tensor intersect, union_, pred, label;  ///< (K) float64
  /// One image: `pred` and `label` (H, W) integer maps; pixels whose label is `ignore_index` are dropped (after
  /// reduce_zero_label: 0 -> ignore, v -> v - 1). A label outside [0, K) other than the ignore index is an error.
  static SegAreas of(const torch::Tensor& pred, const torch::Tensor& label, int64_t num_classes,
                     int64_t ignore_index = 255, bool reduce_zero_label = false);
  void add(const SegAreas& other);
};

/// mmseg's metrics of summed areas: aAcc = Σ intersect / Σ label; per class IoU = intersect / union and
/// Acc = intersect / label (NaN where undefined); mIoU, mAcc = their NaN-means. Fractions (not x100).
struct SegMetrics {
  double aacc = 0, miou = 0, macc = 0;
  torch::Tensor iou, acc;  ///< (K) float64
  static SegMetrics of(const SegAreas& areas);
};

}  // namespace beitv2
