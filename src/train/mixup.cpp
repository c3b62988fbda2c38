// Mixup / CutMix, soft targets, soft-target cross-entropy (include/beitv2/train/mixup.h; timm semantics).
#include "beitv2/train/mixup.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace beitv2 {
namespace {

// Gamma(a, 1) by Marsaglia and Tsang (2000); a < 1 through Gamma(a + 1) * U^(1/a).
double sample_gamma(double a, data::Rng& rng) {
  if (a < 1.0) {
    double u = rng.uniform();
    while (u <= 0.0) u = rng.uniform();
    return sample_gamma(a + 1.0, rng) * std::pow(u, 1.0 / a);
  }
  const double d = a - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = 0, v = 0;
    do {
      x = rng.normal(0.0, 1.0);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = rng.uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

}  // namespace

double sample_beta(double a, double b, data::Rng& rng) {
  TORCH_CHECK(a > 0 && b > 0, "sample_beta: parameters must be positive, got ", a, ", ", b);
  const double x = sample_gamma(a, rng);
  const double y = sample_gamma(b, rng);
  return x + y > 0 ? x / (x + y) : 0.5;
}

MixupDraw cutmix_box(int64_t h, int64_t w, double lam, int64_t cy, int64_t cx, bool correct_lam) {
  const double ratio = std::sqrt(1.0 - lam);
  const auto cut_h = static_cast<int64_t>(static_cast<double>(h) * ratio);  // int() truncates
  const auto cut_w = static_cast<int64_t>(static_cast<double>(w) * ratio);
  MixupDraw d;
  d.cutmix = true;
  d.top = std::clamp<int64_t>(cy - cut_h / 2, 0, h);
  d.bottom = std::clamp<int64_t>(cy + cut_h / 2, 0, h);
  d.left = std::clamp<int64_t>(cx - cut_w / 2, 0, w);
  d.right = std::clamp<int64_t>(cx + cut_w / 2, 0, w);
  d.lam = correct_lam ? 1.0 - static_cast<double>((d.bottom - d.top) * (d.right - d.left)) / static_cast<double>(h * w)
                      : lam;
  return d;
}

MixupDraw draw_mixup(const MixupOptions& o, int64_t h, int64_t w, data::Rng& rng) {
  MixupDraw d;
  if (!o.active() || !(rng.uniform() < o.prob)) return d;
  bool cutmix = false;
  double lam = 1.0;
  if (o.mixup_alpha > 0 && o.cutmix_alpha > 0) {
    cutmix = rng.uniform() < o.switch_prob;
    const double a = cutmix ? o.cutmix_alpha : o.mixup_alpha;
    lam = sample_beta(a, a, rng);
  } else if (o.mixup_alpha > 0) {
    lam = sample_beta(o.mixup_alpha, o.mixup_alpha, rng);
  } else {
    cutmix = true;
    lam = sample_beta(o.cutmix_alpha, o.cutmix_alpha, rng);
  }
  if (lam == 1.0) return d;  // timm returns before drawing a box
  if (!cutmix) {
    d.lam = lam;
    return d;
  }
  const auto cy = static_cast<int64_t>(rng.below(static_cast<uint64_t>(h)));
  const auto cx = static_cast<int64_t>(rng.below(static_cast<uint64_t>(w)));
  return cutmix_box(h, w, lam, cy, cx, o.correct_lam);
}

void apply_mixup_(torch::Tensor& x, const MixupDraw& d) {
  TORCH_CHECK(x.dim() == 4, "apply_mixup_: expected (B, C, H, W), got ", x.sizes());
  if (d.lam == 1.0 && !d.cutmix) return;
  TORCH_CHECK(x.size(0) % 2 == 0, "Mixup/CutMix: the batch size must be even, got ", x.size(0));
  torch::NoGradGuard ng;
  const auto flipped = x.flip(0);
  if (d.cutmix) {
    using torch::indexing::Slice;
    const std::vector<torch::indexing::TensorIndex> idx{Slice(), Slice(), Slice(d.top, d.bottom), Slice(d.left, d.right)};
    x.index_put_(idx, flipped.index(idx));
  } else {
    x.mul_(d.lam).add_(flipped, 1.0 - d.lam);
  }
}

torch::Tensor mixup_target(const torch::Tensor& labels, int64_t num_classes, double lam, double smoothing) {
  TORCH_CHECK(labels.dim() == 1, "mixup_target: expected labels (B), got ", labels.sizes());
  TORCH_CHECK(num_classes > 0, "mixup_target: num_classes must be positive");
  const double off = smoothing / static_cast<double>(num_classes);
  const double on = 1.0 - smoothing + off;
  auto one_hot = [&](const torch::Tensor& y) {
    auto t = torch::full({y.size(0), num_classes}, off, torch::TensorOptions().device(y.device()).dtype(torch::kFloat32));
    return t.scatter_(1, y.to(torch::kLong).unsqueeze(1), on);
  };
  auto y1 = one_hot(labels);
  if (lam == 1.0) return y1;
  return y1 * lam + one_hot(labels.flip(0)) * (1.0 - lam);
}

torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& target) {
  TORCH_CHECK(logits.sizes() == target.sizes(), "soft_target_cross_entropy: logits ", logits.sizes(), " vs target ",
              target.sizes());
  return (-target.to(torch::kFloat32) * torch::log_softmax(logits.to(torch::kFloat32), -1)).sum(-1).mean();
}

int64_t topk_correct(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k) {
  const int64_t kk = std::min(k, logits.size(1));
  const auto top = std::get<1>(logits.topk(kk, 1));  // B, k
  return top.eq(labels.to(top.device()).view({-1, 1})).any(1).sum().item<int64_t>();
}

}  // namespace beitv2
