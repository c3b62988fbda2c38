#pragma once
// NormEMAVectorQuantizer of VQ-KD (official beit2/norm_ema_quantizer.py; docs/reference.md §1.3): inputs and codes are
// l2-normalised, the nearest code is found by ||z||²+||e||²−2z·e (== largest cosine), the output is
// straight-through, the loss is the commitment term beta * MSE(sg(z_q), z), and in training the codebook
// follows an EMA of the normalised per-code means (decay 0.99), re-normalised, after the lookup.
//
// Deliberate divergences (docs/divergences.md D1–D4):
//  - k-means init runs on the global first batch (every rank's vectors, gathered) and rank 0's result is
//    broadcast (the official code lets each rank start from its own codebook of its own batch); training
//    statistics are summed through Collectives (no-ops in one process); usage counts in eval mode are local.
//  - optional dead-code restart (dead_code_restart_steps > 0; off by default, so the default reproduces the
//    reference): a code unused for that many consecutive training steps is re-seeded with a random input
//    vector of the current batch (rank 0's choice, broadcast).
//  - per-code sums use index_add/bincount instead of a (N, n_embed) one-hot matmul (same sums, O(N·d) memory).
//  - the whole quantizer runs in fp32 with autocast off (the official lookup runs under the training autocast).

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "beitv2/core/collectives.h"

namespace beitv2::nn {

struct NormEMAVectorQuantizerOptions {
  NormEMAVectorQuantizerOptions(int64_t n_embed, int64_t embedding_dim)
      : n_embed_(n_embed), embedding_dim_(embedding_dim) {}
  /// Codebook size (8192 in BEiT v2).
  TORCH_ARG(int64_t, n_embed);
  /// Code dimension (32).
  TORCH_ARG(int64_t, embedding_dim);
  /// Commitment loss weight.
  TORCH_ARG(double, beta) = 1.0;
  /// EMA decay of the codebook and of the usage statistics.
  TORCH_ARG(double, decay) = 0.99;
  /// Initialise the codebook by k-means on the first forward's vectors (else random unit vectors).
  TORCH_ARG(bool, kmeans_init) = true;
  TORCH_ARG(int64_t, kmeans_iters) = 10;
  /// Re-seed codes unused for this many consecutive training steps; 0 = never (the reference).
  TORCH_ARG(int64_t, dead_code_restart_steps) = 0;
};

/// The official EmbeddingEMA: the codebook `weight` plus two tensors the update never reads
/// (`cluster_size`, `embed_avg`; set by k-means / at construction), kept because checkpoints carry them.
class EmbeddingEMAImpl : public torch::nn::Cloneable<EmbeddingEMAImpl> {
 public:
  EmbeddingEMAImpl(int64_t n_embed, int64_t dim, bool kmeans_init);
  void reset() override;
  int64_t n_embed, dim;
  bool kmeans_init;
  torch::Tensor weight;        // (n_embed, dim), requires_grad=false; unit rows once initialised
  torch::Tensor cluster_size;  // (n_embed), requires_grad=false
  torch::Tensor embed_avg;     // (n_embed, dim), requires_grad=false
  torch::Tensor initted;       // (1) float buffer: 1 once the codebook is initialised
};
TORCH_MODULE(EmbeddingEMA);

struct QuantizerOutput {
  torch::Tensor z_q;      // (B, C, H, W) straight-through quantised map
  torch::Tensor loss;     // scalar commitment loss
  torch::Tensor indices;  // (B*H*W) int64 code ids, raster order per image
};

/// Cosine k-means as the official `kmeans(..., use_cosine_sim=True)`: means start at `init_indices` rows of
/// `samples` (default: randperm(N)[:k] if N >= k else randint(N, k)); each iteration assigns by the largest
/// dot product, averages, l2-normalises, keeps the previous mean for empty clusters.
/// Returns (means (k, d), counts of the last assignment (k) int64).
std::pair<torch::Tensor, torch::Tensor> kmeans_cosine(const torch::Tensor& samples, int64_t k, int64_t iters,
                                                      const torch::Tensor& init_indices = {});

class NormEMAVectorQuantizerImpl : public torch::nn::Cloneable<NormEMAVectorQuantizerImpl> {
 public:
  explicit NormEMAVectorQuantizerImpl(const NormEMAVectorQuantizerOptions& options);
  void reset() override;
  void pretty_print(std::ostream& os) const override;
  /// z: (B, C, H, W) any float dtype; runs in fp32 with autocast off. In training also updates the codebook.
  QuantizerOutput forward(const torch::Tensor& z);
  /// Zeroes the usage statistics (`cluster_size` buffer), as the official trainer does every epoch.
  void reset_usage();
  /// Codes whose usage statistic is exactly zero (the official `Unused_code`).
  int64_t unused_codes() const;
  /// Codes re-seeded by dead-code restart since construction.
  int64_t restarted_codes() const { return restarted_; }

  NormEMAVectorQuantizerOptions options;
  Collectives collectives;
  EmbeddingEMA embedding{nullptr};
  torch::Tensor cluster_size;  // (n_embed) buffer: EMA of code counts (usage statistics only)

 private:
  void init_codebook(const torch::Tensor& flat, int64_t batch);
  void ema_update(const torch::Tensor& flat, const torch::Tensor& indices);
  torch::Tensor steps_unused_;  // (n_embed) int64, for dead-code restart; not part of the state dict
  int64_t restarted_ = 0;
};
TORCH_MODULE(NormEMAVectorQuantizer);

}  // namespace beitv2::nn
