// Segmentation heads and metrics (include/beitv2/models/segmentation.h; docs/segmentation.md).
#include "beitv2/models/segmentation.h"

#include <torch/torch.h>

#include <limits>

namespace beitv2 {
namespace nn {
namespace {

namespace F = torch::nn::functional;

// resize_bilinear to the spatial size of `like`.
torch::Tensor resize_like(const torch::Tensor& x, const torch::Tensor& like) {
  return resize_bilinear(x, like.size(2), like.size(3));
}

torch::nn::ConvTranspose2d deconv(int64_t d) {
  return torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(d, d, 2).stride(2));
}

}  // namespace

namespace {

SumAcrossProcesses& batch_norm_sum() {
  static SumAcrossProcesses sum;
  return sum;
}

// torch.nn.SyncBatchNorm's training forward and backward (torch/nn/modules/_functions.py), in float32.
class SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor running_mean,
                               torch::Tensor running_var, double momentum, double eps) {
    const auto& sum = batch_norm_sum();
    const auto x = input.to(torch::kFloat);
    const int64_t c = x.size(1);
    const std::vector<int64_t> dims = {0, 2, 3};
    auto stats = torch::cat({x.sum(dims), (x * x).sum(dims),
                             torch::full({1}, static_cast<double>(x.numel() / c), x.options())});
    sum(stats);
    const auto n = stats[2 * c];
    const auto mean = stats.slice(0, 0, c) / n;
    const auto var = (stats.slice(0, c, 2 * c) / n - mean * mean).clamp_min(0);
    const auto invstd = (var + eps).rsqrt();
    {
      torch::NoGradGuard ng;
      running_mean.mul_(1 - momentum).add_(momentum * mean);
      running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1));
    }
    const auto shape = std::vector<int64_t>{1, c, 1, 1};
    const auto w = weight.to(torch::kFloat), b = bias.to(torch::kFloat);
    ctx->save_for_backward({x, w, mean, invstd, n});
    return ((x - mean.view(shape)) * (invstd * w).view(shape) + b.view(shape)).to(input.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &mean = saved[2], &invstd = saved[3], &n = saved[4];
    const int64_t c = x.size(1);
    const std::vector<int64_t> dims = {0, 2, 3}, shape = {1, c, 1, 1};
    const auto dy = grads[0].to(torch::kFloat);
    const auto xhat = (x - mean.view(shape)) * invstd.view(shape);
    const auto sum_dy = dy.sum(dims), sum_dy_xhat = (dy * xhat).sum(dims);
    auto both = torch::cat({sum_dy, sum_dy_xhat});
    batch_norm_sum()(both);
    const auto mean_dy = both.slice(0, 0, c) / n, mean_dy_xhat = both.slice(0, c, 2 * c) / n;
    const auto dx = (dy - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * (invstd * w).view(shape);
    return {dx.to(grads[0].scalar_type()), sum_dy_xhat, sum_dy, {}, {}, {}, {}};
  }
};

}  // namespace

void set_batch_norm_sync(SumAcrossProcesses sum) { batch_norm_sum() = std::move(sum); }

torch::Tensor SyncBatchNormImpl::forward(const torch::Tensor& x) {
  if (!is_training() || !batch_norm_sum()) return torch::nn::BatchNorm2dImpl::forward(x);
  TORCH_CHECK(x.dim() == 4, "SyncBatchNorm: expected (B, C, H, W), got ", x.sizes());
  {
    torch::NoGradGuard ng;
    num_batches_tracked.add_(1);
  }
  return SyncBatchNormFunction::apply(x, weight, bias, running_mean, running_var, options.momentum().value(),
                                      options.eps());
}

ConvModuleImpl::ConvModuleImpl(int64_t in, int64_t out, int64_t kernel, int64_t padding) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(padding).bias(false)));
  bn = register_module("bn", SyncBatchNorm(out));
  torch::NoGradGuard ng;
  torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
}

torch::Tensor ConvModuleImpl::forward(const torch::Tensor& x) { return torch::relu(bn->forward(conv->forward(x))); }

FeaturePyramidImpl::FeaturePyramidImpl(int64_t d) {
  fpn1 = register_module("fpn1", torch::nn::Sequential(deconv(d), SyncBatchNorm(d), torch::nn::GELU(), deconv(d)));
  fpn2 = register_module("fpn2", torch::nn::Sequential(deconv(d)));
}

std::vector<torch::Tensor> FeaturePyramidImpl::forward(const std::vector<torch::Tensor>& f) {
  TORCH_CHECK(f.size() == 4, "FeaturePyramid: expected 4 feature maps, got ", f.size());
  return {fpn1->forward(f[0]), fpn2->forward(f[1]), f[2], F::max_pool2d(f[3], F::MaxPool2dFuncOptions(2).stride(2))};
}

DecodeHeadBase::DecodeHeadBase(int64_t channels, int64_t num_classes, double dropout) : dropout_(dropout) {
  conv_seg = register_module("conv_seg", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, num_classes, 1)));
  torch::NoGradGuard ng;
  conv_seg->weight.normal_(0.0, 0.01);
  conv_seg->bias.zero_();
}

torch::Tensor DecodeHeadBase::cls_seg(const torch::Tensor& feature) {
  auto x = feature;
  if (dropout_ > 0 && is_training()) {
    x = dropout_mask.defined() ? x * dropout_mask : F::dropout2d(x, F::Dropout2dFuncOptions().p(dropout_).training(true));
  }
  return conv_seg->forward(x);
}

UPerHeadImpl::UPerHeadImpl(const SegHeadConfig& c) : DecodeHeadBase(c.channels, c.num_classes, c.dropout) {
  const int64_t d = c.embed_dim, ch = c.channels;
  psp_modules = register_module("psp_modules", torch::nn::ModuleList());
  for (const auto s : c.pool_scales) {
    psp_modules->push_back(torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(s), ConvModule(d, ch, 1)));
  }
  bottleneck = register_module("bottleneck", ConvModule(d + static_cast<int64_t>(c.pool_scales.size()) * ch, ch, 3, 1));
  lateral_convs = register_module("lateral_convs", torch::nn::ModuleList());
  fpn_convs = register_module("fpn_convs", torch::nn::ModuleList());
  for (int i = 0; i < 3; ++i) {
    lateral_convs->push_back(ConvModule(d, ch, 1));
    fpn_convs->push_back(ConvModule(ch, ch, 3, 1));
  }
  fpn_bottleneck = register_module("fpn_bottleneck", ConvModule(4 * ch, ch, 3, 1));
}

torch::Tensor UPerHeadImpl::forward(const std::vector<torch::Tensor>& levels) {
  TORCH_CHECK(levels.size() == 4, "UPerHead: expected 4 levels, got ", levels.size());
  // PSP on the last level: cat(x, each pooled branch resized back) -> bottleneck.
  const auto& x = levels[3];
  std::vector<torch::Tensor> psp{x};
  for (const auto& m : *psp_modules) psp.push_back(resize_like(m->as<torch::nn::Sequential>()->forward(x), x));
  std::vector<torch::Tensor> lat;
  for (size_t i = 0; i < 3; ++i) lat.push_back(lateral_convs[i]->as<ConvModule>()->forward(levels[i]));
  lat.push_back(bottleneck->forward(torch::cat(psp, 1)));
  for (size_t i = 3; i > 0; --i) lat[i - 1] = lat[i - 1] + resize_like(lat[i], lat[i - 1]);
  std::vector<torch::Tensor> outs;
  for (size_t i = 0; i < 3; ++i) outs.push_back(fpn_convs[i]->as<ConvModule>()->forward(lat[i]));
  outs.push_back(lat[3]);
  for (size_t i = 1; i < 4; ++i) outs[i] = resize_like(outs[i], outs[0]);
  return cls_seg(fpn_bottleneck->forward(torch::cat(outs, 1)));
}

FCNHeadImpl::FCNHeadImpl(const SegHeadConfig& c)
    : DecodeHeadBase(c.aux_channels, c.num_classes, c.dropout), in_index_(c.aux_in_index) {
  convs = register_module("convs", torch::nn::Sequential(ConvModule(c.embed_dim, c.aux_channels, 3, 1)));
}

torch::Tensor FCNHeadImpl::forward(const std::vector<torch::Tensor>& levels) {
  return cls_seg(convs->forward(levels.at(static_cast<size_t>(in_index_))));
}

SegmentationHeadsImpl::SegmentationHeadsImpl(const SegHeadConfig& c) : config(c) {
  backbone = register_module("backbone", FeaturePyramid(c.embed_dim));
  decode_head = register_module("decode_head", UPerHead(c));
  auxiliary_head = register_module("auxiliary_head", FCNHead(c));
}

SegmentationHeadsImpl::Output SegmentationHeadsImpl::forward(const std::vector<torch::Tensor>& features) {
  Output o;
  o.levels = backbone->forward(features);
  o.logits = decode_head->forward(o.levels);
  o.aux_logits = auxiliary_head->forward(o.levels);
  return o;
}

}  // namespace nn

torch::Tensor resize_bilinear(const torch::Tensor& x, int64_t height, int64_t width) {
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{height, width})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

torch::Tensor seg_cross_entropy(const torch::Tensor& logits, const torch::Tensor& label, int64_t ignore_index,
                                double weight) {
  namespace F = torch::nn::functional;
  auto x = resize_bilinear(logits, label.size(-2), label.size(-1));
  auto loss = F::cross_entropy(x, label, F::CrossEntropyFuncOptions().ignore_index(ignore_index).reduction(torch::kNone));
  return weight * loss.mean();
}

SegAreas SegAreas::of(const torch::Tensor& pred, const torch::Tensor& label_in, int64_t k, int64_t ignore_index,
                      bool reduce_zero_label) {
  auto label = label_in.to(torch::kLong).flatten();
  auto p = pred.to(torch::kLong).flatten();
  TORCH_CHECK(p.numel() == label.numel(), "SegAreas: prediction ", pred.sizes(), " and label ", label_in.sizes(),
              " differ in size");
  if (reduce_zero_label) {  // 0 -> ignore, v -> v - 1, the ignore value stays
    label = torch::where(label.eq(0), torch::full_like(label, ignore_index),
                         torch::where(label.eq(ignore_index), label, label - 1));
  }
  const auto keep = label.ne(ignore_index);
  label = label.masked_select(keep);
  p = p.masked_select(keep);
  TORCH_CHECK(label.numel() == 0 || (label.min().item<int64_t>() >= 0 && label.max().item<int64_t>() < k),
              "SegAreas: a label outside [0, ", k, ") that is not the ignore index ", ignore_index);
  auto hist = [&](const torch::Tensor& v) {
    auto in = v.masked_select(v.ge(0).logical_and(v.lt(k)));
    return torch::bincount(in, {}, k).to(torch::kFloat64);
  };
  SegAreas a;
  a.intersect = hist(p.masked_select(p.eq(label)));
  a.pred = hist(p);
  a.label = hist(label);
  a.union_ = a.pred + a.label - a.intersect;
  return a;
}

void SegAreas::add(const SegAreas& o) {
  if (!intersect.defined()) {
    *this = o;
    return;
  }
  intersect = intersect + o.intersect;
  union_ = union_ + o.union_;
  pred = pred + o.pred;
  label = label + o.label;
}

SegMetrics SegMetrics::of(const SegAreas& a) {
  SegMetrics m;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double total = a.label.sum().item<double>();
  m.aacc = total > 0 ? a.intersect.sum().item<double>() / total : nan;
  m.iou = a.intersect / a.union_;  // 0/0 = NaN
  m.acc = a.intersect / a.label;
  m.miou = torch::nanmean(m.iou).item<double>();
  m.macc = torch::nanmean(m.acc).item<double>();
  return m;
}

}  // namespace beitv2
