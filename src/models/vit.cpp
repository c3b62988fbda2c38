// VisionTransformer (docs/reference.md §0, §3.3). Reference: microsoft/unilm beit2/modeling_finetune.py and
// modeling_pretrain.py at 768a3c8; timm/models/beit.py. No divergences.
#include "beitv2/models/vit.h"

#include <torch/torch.h>

#include <cmath>

#include "beitv2/nn/init.h"

namespace beitv2 {

VisionTransformerImpl::VisionTransformerImpl(const ViTConfig& config) : config_(config) {
  config_.validate();
  reset();
}

void VisionTransformerImpl::reset() {
  const auto& c = config_;
  patch_embed = register_module("patch_embed", nn::PatchEmbed(nn::PatchEmbedOptions(c.img_size, c.patch_size,
                                                                                    c.in_chans, c.embed_dim)));
  const int64_t n = patch_embed->num_patches();
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, c.embed_dim}));
  if (c.use_abs_pos_emb) pos_embed = register_parameter("pos_embed", torch::zeros({1, n + 1, c.embed_dim}));
  const int64_t g = c.grid_size();
  if (c.use_shared_rel_pos_bias) {
    rel_pos_bias = register_module("rel_pos_bias",
                                   nn::RelativePositionBias(nn::RelativePositionBiasOptions(g, g, c.num_heads)));
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) {
    // Stochastic depth rates = linspace(0, drop_path_rate, depth).
    const double dpr = c.depth > 1 ? c.drop_path_rate * static_cast<double>(i) / static_cast<double>(c.depth - 1)
                                   : 0.0;
    blocks->push_back(nn::Block(nn::BlockOptions(c.embed_dim, c.num_heads)
                                    .mlp_ratio(c.mlp_ratio)
                                    .qkv_bias(c.qkv_bias)
                                    .drop_path(dpr)
                                    .init_values(c.init_values)
                                    .window_h(c.use_rel_pos_bias ? g : 0)
                                    .window_w(c.use_rel_pos_bias ? g : 0)
                                    .act(c.act)
                                    .norm_eps(c.norm_eps)
                                    .backend(c.attention)));
  }
  auto ln = torch::nn::LayerNormOptions({c.embed_dim}).eps(c.norm_eps);
  if (c.use_mean_pooling) {
    fc_norm = register_module("fc_norm", torch::nn::LayerNorm(ln));
  } else {
    norm = register_module("norm", torch::nn::LayerNorm(ln));
  }
  if (c.num_classes > 0) head = register_module("head", torch::nn::Linear(c.embed_dim, c.num_classes));
  init_weights();
}

namespace {
// Bounds of the truncated normal per scheme (see nn/init.h).
void trunc_normal_scheme(torch::Tensor t, InitScheme s) {
  constexpr double std = 0.02;
  if (s == InitScheme::kVit) {
    nn::trunc_normal_(t, std, -2.0, 2.0);
  } else {
    nn::trunc_normal_(t, std, -std, std);
  }
}
}  // namespace

void VisionTransformerImpl::init_weights() {
  torch::NoGradGuard no_grad;
  const InitScheme s = config_.init;
  trunc_normal_scheme(cls_token, s);
  if (pos_embed.defined()) trunc_normal_scheme(pos_embed, s);
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      trunc_normal_scheme(lin->weight, s);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* ln = m->as<torch::nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    } else if (auto* conv = m->as<torch::nn::Conv2d>()) {
      // The fine-tuning code leaves the patch conv at PyTorch's default init; pretraining re-inits it.
      if (s == InitScheme::kBeitPretrain) {
        trunc_normal_scheme(conv->weight, s);
        if (conv->bias.defined()) conv->bias.zero_();
      } else {
        conv->reset_parameters();
      }
    } else if (auto* attn = m->as<nn::Attention>()) {
      if (attn->q_bias.defined()) attn->q_bias.zero_();
      if (attn->v_bias.defined()) attn->v_bias.zero_();
      if (attn->relative_position_bias_table.defined()) attn->relative_position_bias_table.zero_();
    } else if (auto* rpb = m->as<nn::RelativePositionBias>()) {
      rpb->relative_position_bias_table.zero_();
    }
  }
  for (size_t i = 0; i < blocks->size(); ++i) {
    auto* block = blocks[i]->as<nn::Block>();
    const double rescale = std::sqrt(2.0 * static_cast<double>(i + 1));  // fix_init_weight
    block->attn->proj->weight.div_(rescale);
    block->mlp->fc2->weight.div_(rescale);
    if (block->gamma_1.defined()) {
      block->gamma_1.fill_(config_.init_values);
      block->gamma_2.fill_(config_.init_values);
    }
  }
  init_head();
}

void VisionTransformerImpl::init_head() {
  if (!head) return;
  torch::NoGradGuard no_grad;
  trunc_normal_scheme(head->weight, config_.init);
  head->bias.zero_();
  head->weight.mul_(config_.init_scale);
  head->bias.mul_(config_.init_scale);
}

void VisionTransformerImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::VisionTransformer(img=" << config_.img_size << ", patch=" << config_.patch_size
     << ", dim=" << config_.embed_dim << ", depth=" << config_.depth << ", heads=" << config_.num_heads << ")";
}

torch::Tensor VisionTransformerImpl::embed(const torch::Tensor& x) {
  auto tokens = patch_embed(x);  // B, N, D
  tokens = torch::cat({cls_token.expand({tokens.size(0), -1, -1}).to(tokens.scalar_type()), tokens}, 1);
  if (pos_embed.defined()) tokens = tokens + pos_embed;
  return tokens;  // B, 1+N, D
}

torch::Tensor VisionTransformerImpl::shared_bias() {
  return rel_pos_bias ? rel_pos_bias->forward() : torch::Tensor();
}

torch::Tensor VisionTransformerImpl::forward_intermediates(const torch::Tensor& x, const std::vector<int64_t>& indices,
                                                           std::vector<torch::Tensor>& intermediates) {
  for (auto i : indices) {
    TORCH_CHECK(i >= 0 && i < config_.depth, "forward_intermediates: block index ", i, " out of range [0, ",
                config_.depth, ")");
  }
  intermediates.clear();
  auto tokens = embed(x);
  const auto bias = shared_bias();
  for (int64_t i = 0; i < config_.depth; ++i) {
    tokens = blocks[i]->as<nn::Block>()->forward(tokens, bias);
    if (std::find(indices.begin(), indices.end(), i) != indices.end()) intermediates.push_back(tokens);
  }
  return norm ? norm(tokens) : tokens;
}

torch::Tensor VisionTransformerImpl::forward_features(const torch::Tensor& x) {
  std::vector<torch::Tensor> none;
  return forward_intermediates(x, {}, none);
}

torch::Tensor VisionTransformerImpl::forward_head(const torch::Tensor& tokens, bool pre_logits) {
  TORCH_CHECK(tokens.dim() == 3 && tokens.size(2) == config_.embed_dim, "forward_head: expected (B, 1+N, ",
              config_.embed_dim, ") tokens, got ", tokens.sizes());
  auto pooled = config_.use_mean_pooling ? fc_norm(tokens.slice(1, 1).mean(1)) : tokens.select(1, 0);
  if (pre_logits || !head) return pooled;
  return head(pooled);
}

torch::Tensor VisionTransformerImpl::forward_patch_tokens(const torch::Tensor& x) {
  auto patches = forward_features(x).slice(1, 1);  // B, N, D
  return config_.use_mean_pooling ? fc_norm(patches) : patches;
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& x) { return forward_head(forward_features(x)); }

std::set<std::string> VisionTransformerImpl::no_weight_decay() const {
  std::set<std::string> names{"cls_token"};
  if (pos_embed.defined()) names.insert("pos_embed");
  return names;
}

int64_t VisionTransformerImpl::layer_id_for(const std::string& name) const {
  auto starts = [&name](const char* p) { return name.rfind(p, 0) == 0; };
  if (name == "cls_token" || name == "mask_token" || name == "pos_embed" || starts("patch_embed")) return 0;
  if (starts("blocks.")) {
    const auto dot = name.find('.', 7);
    return std::stoll(name.substr(7, dot - 7)) + 1;
  }
  return config_.depth + 1;
}

void VisionTransformerImpl::reset_classifier(int64_t num_classes) {
  TORCH_CHECK(num_classes >= 0, "reset_classifier: num_classes must be >= 0, got ", num_classes);
  config_.num_classes = num_classes;
  if (num_classes == 0) {
    if (head) unregister_module("head");
    head = nullptr;
    return;
  }
  torch::nn::Linear fresh(config_.embed_dim, num_classes);
  fresh->to(cls_token.device(), cls_token.scalar_type());
  head = head ? replace_module("head", fresh) : register_module("head", fresh);
  init_head();
}

void VisionTransformerImpl::set_attention_backend(AttentionBackend backend) {
  config_.attention = backend;
  for (auto& m : modules(false)) {
    if (auto* attn = m->as<nn::Attention>()) attn->options.backend(backend);
  }
}

}  // namespace beitv2
