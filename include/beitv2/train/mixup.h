#pragma once
// Mixup / CutMix with label smoothing and the soft-target cross-entropy of the fine-tuning recipe
// (docs/reference.md §5; official microsoft/unilm beit2/run_class_finetuning.py uses timm's Mixup in 'batch'
// mode and SoftTargetCrossEntropy; semantics of timm/data/mixup.py and timm/loss/cross_entropy.py, written here).
//
// Per batch (timm's mode 'batch'): with probability `prob` the batch is mixed, else lam = 1 (no mixing, the
// targets are still smoothed). When both alphas are > 0, CutMix is chosen with probability `switch_prob`, else
// Mixup; lam ~ Beta(alpha, alpha) of the chosen one. Mixup: x = lam x + (1 - lam) flip(x) (flip = the batch in
// reverse order). CutMix: a box of side int(H sqrt(1-lam)) x int(W sqrt(1-lam)) centred at a uniform pixel
// (cy in [0, H), cx in [0, W)), its ends cy -+ cut/2 clipped to the image, is pasted from flip(x); with
// correct_lam lam becomes 1 - box area / image area (the clipped box). Targets: one-hot with off value
// smoothing/K and on value 1 - smoothing + smoothing/K, mixed lam y + (1 - lam) flip(y).
// Divergences: draws come from the data layer's Rng seeded by (seed, epoch, batch) instead of numpy's global
// generator, so a resumed run mixes the same way; cutmix_minmax and the 'pair'/'elem' modes are not offered.

#include <torch/types.h>

#include <cstdint>

#include "beitv2/data/rng.h"

namespace beitv2 {

/// Example (the BEiT v2 recipe): MixupOptions o; o.num_classes = 1000;  // 0.8 / 1.0, prob 1, switch 0.5, ls 0.1
struct MixupOptions {
  double mixup_alpha = 0.8;      ///< Beta(a, a) of Mixup; 0 = Mixup off
  double cutmix_alpha = 1.0;     ///< Beta(a, a) of CutMix; 0 = CutMix off
  double prob = 1.0;             ///< probability that a batch is mixed at all
  double switch_prob = 0.5;      ///< probability of CutMix when both are on
  double label_smoothing = 0.1;  ///< applied to the targets whether or not the batch is mixed
  bool correct_lam = true;       ///< CutMix lam from the clipped box's area (timm's default)
  int64_t num_classes = 0;

  bool active() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

/// What one batch draws: lam and, for CutMix, the box [top, bottom) x [left, right).
struct MixupDraw {
  double lam = 1.0;
  bool cutmix = false;
  int64_t top = 0, bottom = 0, left = 0, right = 0;
};

/// A sample of Beta(a, b) (a, b > 0) from two Gamma draws (Marsaglia–Tsang).
double sample_beta(double a, double b, data::Rng& rng);

/// timm's rand_bbox for an image of h x w and a given lam and centre (cy, cx): the clipped box.
MixupDraw cutmix_box(int64_t h, int64_t w, double lam, int64_t cy, int64_t cx, bool correct_lam);

/// The batch's draw (timm Mixup._params_per_batch + rand_bbox), for images of h x w.
MixupDraw draw_mixup(const MixupOptions& options, int64_t h, int64_t w, data::Rng& rng);

/// Mixes x (B, C, H, W) float in place with its reversed batch (B must be even when lam < 1).
void apply_mixup_(torch::Tensor& x, const MixupDraw& draw);

/// labels (B) int64 -> soft targets (B, K) float: smoothed one-hot, lam y + (1 - lam) flip(y).
torch::Tensor mixup_target(const torch::Tensor& labels, int64_t num_classes, double lam, double smoothing);

/// mean over the batch of sum_k -target_k log_softmax(logits)_k (timm SoftTargetCrossEntropy), in float32.
torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& target);

/// Number of rows whose label is among the k largest logits (top-k correct), as int64.
int64_t topk_correct(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k);

}  // namespace beitv2
