// BeitV2ForMIM (docs/reference.md §3.1-3.3, §4). Reference: microsoft/unilm beit2/modeling_pretrain.py at
// 768a3c8 (VisionTransformerForMaskedImageModeling{,CLS}). No divergences.
#include "beitv2/models/beitv2.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "beitv2/core/config_yaml.h"
#include "beitv2/models/registry.h"
#include "beitv2/nn/init.h"

namespace beitv2 {

// ---- config ----

ViTConfig BeitV2Config::default_backbone() {
  ViTConfig c;  // ViT-B/16, qkv bias, LN eps 1e-6
  c.use_abs_pos_emb = false;
  c.use_rel_pos_bias = false;
  c.use_shared_rel_pos_bias = true;
  c.init_values = 0.1;
  c.use_mean_pooling = false;
  c.num_classes = 0;
  c.init = InitScheme::kBeitPretrain;
  return c;
}

void BeitV2Config::validate() const {
  constexpr auto bad = model_field_fail;
  try {
    backbone.validate();
  } catch (const ConfigError& e) {
    std::string msg = e.what();  // "model.<field> = ..." -> "model.backbone.<field> = ..."
    if (msg.rfind("model.", 0) == 0) msg.insert(6, "backbone.");
    throw ConfigError(msg);
  }
  if (backbone.use_mean_pooling) {
    bad("backbone.use_mean_pooling", "true", "the MIM model normalises every token with `norm`: must be false");
  }
  if (backbone.num_classes != 0) {
    bad("backbone.num_classes", std::to_string(backbone.num_classes), "the MIM model predicts with lm_head: must be 0");
  }
  if (backbone.init != InitScheme::kBeitPretrain) {
    bad("backbone.init", beitv2::to_string(backbone.init), "the MIM model has the pretraining init: must be beit_pretrain");
  }
  if (vocab_size <= 0) bad("vocab_size", std::to_string(vocab_size), "must be positive");
  if (head_layers < 0) bad("head_layers", std::to_string(head_layers), "must be >= 0 (0 = no CLS head)");
  if (head_layers > 0 && (early_layers < 1 || early_layers > backbone.depth)) {
    bad("early_layers", std::to_string(early_layers),
        "must be in [1, backbone.depth = " + std::to_string(backbone.depth) + "]");
  }
}

std::string BeitV2Config::to_string() const { return to_table(*this); }

void read_yaml(YamlMap& m, BeitV2Config& c) {
  apply_preset(m, c, beitv2_preset);
  read_fields(m, c);
  try {
    c.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(m.file() + ": " + e.what());
  }
}

namespace {

BeitV2Config mim(int64_t dim, int64_t depth, int64_t heads, double init_values, int64_t early_layers) {
  BeitV2Config c;
  c.backbone.embed_dim = dim;
  c.backbone.depth = depth;
  c.backbone.num_heads = heads;
  c.backbone.init_values = init_values;
  c.early_layers = early_layers;
  return c;
}

// CPU demo: 64x64 images, 8x8 patches (8x8 grid), width 64, 4 blocks, 4 heads, 256 codes (the geometry and
// codebook of configs/vqkd_tiny_photos.yaml's tokenizer).
BeitV2Config tiny_patch8_64() {
  BeitV2Config c = mim(64, 4, 4, 0.1, 3);
  c.backbone.img_size = 64;
  c.backbone.patch_size = 8;
  c.vocab_size = 256;
  return c;
}

// Tests: 32x32 images, 8x8 patches (4x4 grid), width 32, 2 blocks, 2 heads, 64 codes, CLS head after block 1.
BeitV2Config test_tiny() {
  BeitV2Config c = mim(32, 2, 2, 0.1, 1);
  c.backbone.img_size = 32;
  c.backbone.patch_size = 8;
  c.vocab_size = 64;
  return c;
}

const PresetTable<BeitV2Config>& beitv2_registry() {
  static const PresetTable<BeitV2Config> r = {
      {"beitv2_base_patch16_224", [] { return mim(768, 12, 12, 0.1, 9); }},
      {"beitv2_large_patch16_224", [] { return mim(1024, 24, 16, 1e-5, 21); }},
      {"beitv2_tiny_patch8_64", [] { return tiny_patch8_64(); }},
      {"beitv2_test_tiny", [] { return test_tiny(); }},
  };
  return r;
}

// Stochastic depth rate i of linspace(0, rate, n).
double linspace_at(double rate, int64_t n, int64_t i) {
  return n > 1 ? rate * static_cast<double>(i) / static_cast<double>(n - 1) : 0.0;
}

// The pretraining init's truncated normal: std .02 cut at ±1 std (modeling_pretrain.py's trunc_normal_ wrapper).
void trunc_normal_pt(torch::Tensor t) {
  constexpr double std = 0.02;
  nn::trunc_normal_(t, std, -std, std);
}

}  // namespace

BeitV2Config beitv2_preset(const std::string& name) { return lookup_preset(beitv2_registry(), name, "MIM model"); }

std::vector<std::string> beitv2_preset_names() { return preset_names(beitv2_registry()); }

MimLoss mim_loss(const MimOutput& out, const torch::Tensor& labels) {
  TORCH_CHECK(out.logits.defined() && out.logits.dim() == 2, "mim_loss: expected logits (M, V), got ",
              out.logits.defined() ? out.logits.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == out.logits.size(0), "mim_loss: expected labels (",
              out.logits.size(0), "), got ", labels.sizes());
  const auto target = labels.to(out.logits.device(), torch::kLong);
  auto accuracy = [&target](const torch::Tensor& logits) {
    return target.numel() == 0 ? torch::zeros({}, logits.options().dtype(torch::kFloat32))
                               : logits.detach().argmax(-1).eq(target).to(torch::kFloat32).mean();
  };
  MimLoss l;
  l.loss_1 = torch::nn::functional::cross_entropy(out.logits.to(torch::kFloat32), target);
  l.mlm_acc_1 = accuracy(out.logits);
  l.loss = l.loss_1;
  if (out.cls_logits.defined()) {
    l.loss_2 = torch::nn::functional::cross_entropy(out.cls_logits.to(torch::kFloat32), target);
    l.mlm_acc_2 = accuracy(out.cls_logits);
    l.loss = l.loss_1 + l.loss_2;
  }
  return l;
}

// ---- model ----

BeitV2ForMIMImpl::BeitV2ForMIMImpl(const BeitV2Config& config) : config_(config) {
  config_.validate();
  reset();
}

nn::BlockOptions BeitV2ForMIMImpl::block_options(double drop_path) const {
  const auto& c = config_.backbone;
  const int64_t g = c.grid_size();
  return nn::BlockOptions(c.embed_dim, c.num_heads)
      .mlp_ratio(c.mlp_ratio)
      .qkv_bias(c.qkv_bias)
      .drop_path(drop_path)
      .init_values(c.init_values)
      .window_h(c.use_rel_pos_bias ? g : 0)
      .window_w(c.use_rel_pos_bias ? g : 0)
      .act(c.act)
      .norm_eps(c.norm_eps)
      .backend(c.attention);
}

void BeitV2ForMIMImpl::reset() {
  const auto& c = config_.backbone;
  const int64_t d = c.embed_dim;
  patch_embed = register_module("patch_embed", nn::PatchEmbed(nn::PatchEmbedOptions(c.img_size, c.patch_size,
                                                                                    c.in_chans, d)));
  const int64_t n = patch_embed->num_patches();
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, d}));
  mask_token = register_parameter("mask_token", torch::zeros({1, 1, d}));
  if (c.use_abs_pos_emb) pos_embed = register_parameter("pos_embed", torch::zeros({1, n + 1, d}));
  if (c.use_shared_rel_pos_bias) {
    const int64_t g = c.grid_size();
    rel_pos_bias = register_module("rel_pos_bias",
                                   nn::RelativePositionBias(nn::RelativePositionBiasOptions(g, g, c.num_heads)));
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) {
    blocks->push_back(nn::Block(block_options(linspace_at(c.drop_path_rate, c.depth, i))));
  }
  auto ln = torch::nn::LayerNormOptions({d}).eps(c.norm_eps);
  norm = register_module("norm", torch::nn::LayerNorm(ln));
  lm_head = register_module("lm_head", torch::nn::Linear(d, config_.vocab_size));
  if (config_.has_cls_head()) {
    // Rates continue the backbone's: dpr[l + j] of linspace(0, rate, max(depth, l + head_layers)).
    const int64_t l = config_.early_layers, h = config_.head_layers;
    const int64_t steps = std::max(c.depth, l + h);
    cls_pt_layers = register_module("cls_pt_layers", torch::nn::ModuleList());
    for (int64_t j = 0; j < h; ++j) {
      cls_pt_layers->push_back(nn::Block(block_options(linspace_at(c.drop_path_rate, steps, l + j))));
    }
    if (!config_.shared_lm_head) {
      cls_pt_norm = register_module("cls_pt_norm", torch::nn::LayerNorm(ln));
      cls_pt_lm_head = register_module("cls_pt_lm_head", torch::nn::Linear(d, config_.vocab_size));
    }
  }
  init_weights();
}

void BeitV2ForMIMImpl::init_weights() {
  torch::NoGradGuard no_grad;
  const double init_values = config_.backbone.init_values;
  // Zero tables and q/v biases, layer-scale constants: the same in the backbone and the CLS head.
  auto init_block_constants = [init_values](nn::BlockImpl& block) {
    if (block.attn->q_bias.defined()) block.attn->q_bias.zero_();
    if (block.attn->v_bias.defined()) block.attn->v_bias.zero_();
    if (block.attn->relative_position_bias_table.defined()) block.attn->relative_position_bias_table.zero_();
    if (block.gamma_1.defined()) {
      block.gamma_1.fill_(init_values);
      block.gamma_2.fill_(init_values);
    }
  };
  auto init_module = [](torch::nn::Module& m) {  // modeling_pretrain.py `_init_weights`
    if (auto* lin = m.as<torch::nn::Linear>()) {
      trunc_normal_pt(lin->weight);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* ln = m.as<torch::nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    } else if (auto* conv = m.as<torch::nn::Conv2d>()) {
      trunc_normal_pt(conv->weight);
      if (conv->bias.defined()) conv->bias.zero_();
    }
  };

  if (pos_embed.defined()) trunc_normal_pt(pos_embed);
  trunc_normal_pt(cls_token);
  trunc_normal_pt(mask_token);
  std::vector<torch::nn::Module*> backbone{patch_embed.get(), blocks.get(), norm.get(), lm_head.get()};
  if (cls_pt_norm) backbone.push_back(cls_pt_norm.get());
  if (cls_pt_lm_head) backbone.push_back(cls_pt_lm_head.get());
  for (auto* root : backbone) {
    init_module(*root);
    for (auto& m : root->modules(/*include_self=*/false)) init_module(*m);
  }
  if (rel_pos_bias) rel_pos_bias->relative_position_bias_table.zero_();
  for (size_t i = 0; i < blocks->size(); ++i) {
    auto& block = *blocks[i]->as<nn::BlockImpl>();
    init_block_constants(block);
    const double rescale = std::sqrt(2.0 * static_cast<double>(i + 1));  // fix_init_weight
    block.attn->proj->weight.div_(rescale);
    block.mlp->fc2->weight.div_(rescale);
  }
  if (cls_pt_layers) {
    for (size_t j = 0; j < cls_pt_layers->size(); ++j) {
      auto& block = *cls_pt_layers[j]->as<nn::BlockImpl>();
      for (auto& m : block.modules(/*include_self=*/false)) {  // PyTorch defaults, as at construction
        if (auto* lin = m->as<torch::nn::Linear>()) lin->reset_parameters();
        if (auto* ln = m->as<torch::nn::LayerNorm>()) ln->reset_parameters();
      }
      init_block_constants(block);
      // fix_init_cls_pt_weight
      const double rescale = std::sqrt(2.0 * static_cast<double>(config_.early_layers + static_cast<int64_t>(j) + 1));
      block.attn->proj->weight.div_(rescale);
      block.mlp->fc2->weight.div_(rescale);
    }
  }
}

void BeitV2ForMIMImpl::pretty_print(std::ostream& os) const {
  const auto& c = config_.backbone;
  os << "beitv2::BeitV2ForMIM(img=" << c.img_size << ", patch=" << c.patch_size << ", dim=" << c.embed_dim
     << ", depth=" << c.depth << ", heads=" << c.num_heads << ", vocab=" << config_.vocab_size
     << ", early_layers=" << config_.early_layers << ", head_layers=" << config_.head_layers
     << ", shared_lm_head=" << (config_.shared_lm_head ? "true" : "false") << ")";
}

torch::Tensor BeitV2ForMIMImpl::embed(const torch::Tensor& x, const torch::Tensor& mask) {
  auto tokens = patch_embed(x);  // B, N, D
  const int64_t b = tokens.size(0), n = tokens.size(1);
  if (mask.defined()) {
    TORCH_CHECK(mask.scalar_type() == torch::kBool, "BeitV2ForMIM: bool_masked_pos must be bool, got ",
                mask.scalar_type());
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == b && mask.size(1) == n,
                "BeitV2ForMIM: expected bool_masked_pos (", b, ", ", n, "), got ", mask.sizes());
    auto w = mask.to(tokens.device()).unsqueeze(-1).to(tokens.scalar_type());  // B, N, 1
    tokens = tokens * (1 - w) + mask_token.to(tokens.scalar_type()) * w;
  }
  tokens = torch::cat({cls_token.expand({b, -1, -1}).to(tokens.scalar_type()), tokens}, 1);
  if (pos_embed.defined()) tokens = tokens + pos_embed;
  return tokens;  // B, 1+N, D
}

torch::Tensor BeitV2ForMIMImpl::shared_bias() {
  return rel_pos_bias ? rel_pos_bias->forward() : torch::Tensor();
}

torch::Tensor BeitV2ForMIMImpl::forward_intermediates(const torch::Tensor& x, const torch::Tensor& mask,
                                                      const std::vector<int64_t>& indices,
                                                      std::vector<torch::Tensor>& intermediates) {
  const int64_t depth = config_.backbone.depth;
  for (auto i : indices) {
    TORCH_CHECK(i >= 0 && i < depth, "BeitV2ForMIM::forward_intermediates: block index ", i,
                " out of range [0, ", depth, ")");
  }
  std::vector<torch::Tensor> outs(static_cast<size_t>(depth));
  auto tokens = embed(x, mask);
  const auto bias = shared_bias();
  for (int64_t i = 0; i < depth; ++i) {
    tokens = blocks[i]->as<nn::Block>()->forward(tokens, bias);
    outs[static_cast<size_t>(i)] = tokens;
  }
  intermediates.clear();
  for (auto i : indices) intermediates.push_back(outs[static_cast<size_t>(i)]);
  return norm(tokens);
}

torch::Tensor BeitV2ForMIMImpl::forward_features(const torch::Tensor& x, const torch::Tensor& mask) {
  std::vector<torch::Tensor> none;
  return forward_intermediates(x, mask, {}, none);
}

std::pair<torch::Tensor, torch::Tensor> BeitV2ForMIMImpl::forward_tokens(const torch::Tensor& x,
                                                                        const torch::Tensor& mask) {
  auto tokens = embed(x, mask);
  const auto bias = shared_bias();
  torch::Tensor early;  // patch tokens after block early_layers - 1, pre-norm: B, N, D
  for (int64_t i = 0; i < config_.backbone.depth; ++i) {
    tokens = blocks[i]->as<nn::Block>()->forward(tokens, bias);
    if (i + 1 == config_.early_layers) early = tokens.slice(1, 1);
  }
  if (!cls_pt_layers) return {norm(tokens), torch::Tensor()};
  auto head = torch::cat({tokens.slice(1, 0, 1), early}, 1);  // last cls (pre-norm) + early patches: B, 1+N, D
  for (const auto& blk : *cls_pt_layers) head = blk->as<nn::Block>()->forward(head, bias);
  return {norm(tokens), cls_pt_norm ? cls_pt_norm(head) : norm(head)};
}

MimOutput BeitV2ForMIMImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  TORCH_CHECK(mask.defined(), "BeitV2ForMIM::forward: bool_masked_pos (B, N) is required");
  auto [tokens, head_tokens] = forward_tokens(x, mask);
  const auto m = mask.to(tokens.device());
  MimOutput out;
  out.logits = lm_head(tokens.slice(1, 1).index({m}));  // M, V (batch-major, raster order)
  if (head_tokens.defined()) {
    auto masked = head_tokens.slice(1, 1).index({m});
    out.cls_logits = cls_pt_lm_head ? cls_pt_lm_head(masked) : lm_head(masked);
  }
  return out;
}

std::set<std::string> BeitV2ForMIMImpl::no_weight_decay() const {
  std::set<std::string> names{"cls_token"};
  if (pos_embed.defined()) names.insert("pos_embed");
  return names;
}

void BeitV2ForMIMImpl::set_attention_backend(AttentionBackend backend) {
  config_.backbone.attention = backend;
  for (auto& m : modules(false)) {
    if (auto* attn = m->as<nn::Attention>()) attn->options.backend(backend);
  }
}

}  // namespace beitv2
