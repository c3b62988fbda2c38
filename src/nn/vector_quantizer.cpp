// NormEMAVectorQuantizer (docs/reference.md §1.3); reference: microsoft/unilm beit2/norm_ema_quantizer.py at 768a3c8.
// Divergences are listed in the header.
#include "beitv2/nn/vector_quantizer.h"

#include <torch/torch.h>

#include "beitv2/core/autocast.h"

namespace beitv2 {

namespace nn {
namespace {

torch::Tensor l2norm(const torch::Tensor& t) {
  return torch::nn::functional::normalize(t, torch::nn::functional::NormalizeFuncOptions().p(2).dim(-1));
}

}  // namespace

// ---- EmbeddingEMA ----

EmbeddingEMAImpl::EmbeddingEMAImpl(int64_t n_embed_, int64_t dim_, bool kmeans_init_)
    : n_embed(n_embed_), dim(dim_), kmeans_init(kmeans_init_) {
  reset();
}

void EmbeddingEMAImpl::reset() {
  // k-means init starts from zeros; otherwise random unit vectors (official EmbeddingEMA).
  auto w = kmeans_init ? torch::zeros({n_embed, dim}) : l2norm(torch::randn({n_embed, dim}));
  weight = register_parameter("weight", w, /*requires_grad=*/false);
  cluster_size = register_parameter("cluster_size", torch::zeros({n_embed}), false);
  embed_avg = register_parameter("embed_avg", w.clone(), false);
  initted = register_buffer("initted", torch::full({1}, kmeans_init ? 0.0 : 1.0));
}

// ---- k-means ----

std::pair<torch::Tensor, torch::Tensor> kmeans_cosine(const torch::Tensor& samples, int64_t k, int64_t iters,
                                                      const torch::Tensor& init_indices) {
  TORCH_CHECK(samples.dim() == 2 && samples.size(0) > 0, "kmeans_cosine: expected (N, d) samples, got ",
              samples.sizes());
  const int64_t n = samples.size(0), d = samples.size(1);
  torch::Tensor idx = init_indices;
  if (!idx.defined()) {
    auto opts = torch::TensorOptions().dtype(torch::kLong).device(samples.device());
    idx = n >= k ? torch::randperm(n, opts).slice(0, 0, k) : torch::randint(0, n, {k}, opts);
  }
  TORCH_CHECK(idx.numel() == k, "kmeans_cosine: ", idx.numel(), " initial picks for ", k, " clusters");
  auto means = samples.index_select(0, idx.to(samples.device()));
  torch::Tensor bins;
  for (int64_t it = 0; it < iters; ++it) {
    auto buckets = std::get<1>(samples.mm(means.t()).max(-1));  // N
    bins = torch::bincount(buckets, {}, k);
    auto zero = bins.eq(0);
    auto sums = torch::zeros({k, d}, samples.options()).scatter_add_(0, buckets.unsqueeze(1).expand({n, d}), samples);
    auto new_means = l2norm(sums / bins.masked_fill(zero, 1).unsqueeze(1).to(samples.scalar_type()));
    means = torch::where(zero.unsqueeze(1), means, new_means);
  }
  if (!bins.defined()) bins = torch::zeros({k}, torch::TensorOptions().dtype(torch::kLong).device(samples.device()));
  return {means, bins};
}

// ---- quantizer ----

NormEMAVectorQuantizerImpl::NormEMAVectorQuantizerImpl(const NormEMAVectorQuantizerOptions& options_)
    : options(options_) {
  reset();
}

void NormEMAVectorQuantizerImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.n_embed() > 0 && o.embedding_dim() > 0, "NormEMAVectorQuantizer: n_embed and embedding_dim must be "
              "positive, got ", o.n_embed(), ", ", o.embedding_dim());
  TORCH_CHECK(o.decay() >= 0 && o.decay() < 1, "NormEMAVectorQuantizer: decay must be in [0, 1), got ", o.decay());
  embedding = register_module("embedding", EmbeddingEMA(o.n_embed(), o.embedding_dim(), o.kmeans_init()));
  cluster_size = register_buffer("cluster_size", torch::zeros({o.n_embed()}));
  steps_unused_ = torch::Tensor();
  restarted_ = 0;
}

void NormEMAVectorQuantizerImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::nn::NormEMAVectorQuantizer(n_embed=" << options.n_embed() << ", dim=" << options.embedding_dim()
     << ", decay=" << options.decay() << ", beta=" << options.beta() << ")";
}

void NormEMAVectorQuantizerImpl::reset_usage() {
  torch::NoGradGuard ng;
  cluster_size.zero_();
}

int64_t NormEMAVectorQuantizerImpl::unused_codes() const { return cluster_size.eq(0).sum().item<int64_t>(); }

void NormEMAVectorQuantizerImpl::init_codebook(const torch::Tensor& flat, int64_t batch) {
  // k-means over the whole global batch: every process's vectors, put in the order one process holding the
  // global batch would have them (the loader gives rank r the positions r, r + world, ... of it), so that N
  // processes start from the codebook one process would.
  auto all = collectives.gather(flat);  // world, B*H*W, C
  const int64_t world = all.size(0), c = flat.size(1);
  all = all.reshape({world, batch, -1, c}).transpose(0, 1).reshape({-1, c});
  auto [means, counts] = kmeans_cosine(all, options.n_embed(), options.kmeans_iters());
  collectives.from_rank0(means);  // divergence: one codebook for all ranks
  collectives.from_rank0(counts);
  embedding->weight.copy_(means);
  embedding->cluster_size.copy_(counts.to(embedding->cluster_size.scalar_type()));
  embedding->initted.fill_(1.0);
}

void NormEMAVectorQuantizerImpl::ema_update(const torch::Tensor& flat, const torch::Tensor& indices) {
  const double decay = options.decay();
  auto bins = torch::bincount(indices, {}, options.n_embed()).to(flat.scalar_type());  // n
  collectives.sum(bins);
  cluster_size.mul_(decay).add_(bins, 1 - decay);
  auto zero = bins.eq(0);
  auto embed_sum = torch::zeros({options.n_embed(), options.embedding_dim()}, flat.options())
                       .index_add_(0, indices, flat);  // n, d (the official zᵀ·onehot, transposed)
  collectives.sum(embed_sum);
  auto means = l2norm(embed_sum / bins.masked_fill(zero, 1).unsqueeze(1));
  auto& w = embedding->weight;
  means = torch::where(zero.unsqueeze(1), w, means);
  w.mul_(decay).add_(means, 1 - decay);
  w.copy_(l2norm(w));

  if (options.dead_code_restart_steps() > 0) {
    if (!steps_unused_.defined()) steps_unused_ = torch::zeros({options.n_embed()}, indices.options());
    steps_unused_.add_(1).masked_fill_(~zero, 0);
    auto dead = steps_unused_.ge(options.dead_code_restart_steps()).nonzero().flatten();
    if (dead.numel() > 0) {
      auto picks = torch::randint(0, flat.size(0), {dead.size(0)}, indices.options());
      auto fresh = flat.index_select(0, picks);
      collectives.from_rank0(fresh);
      w.index_copy_(0, dead, fresh);
      steps_unused_.index_fill_(0, dead, 0);
      restarted_ += dead.numel();
    }
  }
}

QuantizerOutput NormEMAVectorQuantizerImpl::forward(const torch::Tensor& z_in) {
  const auto& o = options;
  TORCH_CHECK(z_in.dim() == 4 && z_in.size(1) == o.embedding_dim(), "NormEMAVectorQuantizer: expected (B, ",
              o.embedding_dim(), ", H, W), got ", z_in.sizes());
  AutocastOff fp32;
  auto z = l2norm(z_in.to(torch::kFloat32).permute({0, 2, 3, 1}));  // B, H, W, C
  auto flat = z.reshape({-1, o.embedding_dim()});                     // N, C
  torch::Tensor indices, z_q;
  {
    torch::NoGradGuard ng;
    auto data = flat.detach();
    if (embedding->initted.item<double>() == 0.0) init_codebook(data, z.size(0));
    const auto& w = embedding->weight;
    auto d = data.pow(2).sum(1, true) + w.pow(2).sum(1) - 2 * data.mm(w.t());  // N, n_embed
    indices = d.argmin(1);
    z_q = w.index_select(0, indices).view(z.sizes());  // looked up before the EMA update
    if (is_training()) {
      ema_update(data, indices);
    } else {
      // This process's counts: evaluation runs on rank 0 alone, over the whole set.
      auto counts = torch::bincount(indices, {}, o.n_embed()).to(torch::kFloat32);
      cluster_size.mul_(o.decay()).add_(counts, 1 - o.decay());
    }
  }
  auto loss = o.beta() * torch::mse_loss(z_q, z);  // commitment only (z_q carries no gradient)
  auto out = z + (z_q - z).detach();               // straight-through
  return {out.permute({0, 3, 1, 2}), loss, indices};
}

}  // namespace nn
}  // namespace beitv2
