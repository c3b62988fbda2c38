#pragma once
// The plain config struct of a Vision Transformer. A registry name (models/registry.h) is only a preset of
// it; a YAML `model:` section may name a preset, spell out every field, or override a few:
//
//   model:
//     preset: vit_base_patch16_224   # optional: start from this preset
//     depth: 6                       # then override fields
//
// Divergence note: none; every field maps to an argument of the official VisionTransformer.

#include <cstdint>
#include <string>

#include "beitv2/core/config_fields.h"
#include "beitv2/nn/enums.h"

namespace beitv2 {

class YamlMap;

/// How freshly built weights are initialised (docs/reference.md §0 vs §3.3).
enum class InitScheme {
  kVit,           ///< official modeling_finetune / VQ-KD: trunc_normal(.02) cut at ±2 (absolute), conv default
  kBeitPretrain,  ///< official modeling_pretrain: trunc_normal(.02) cut at ±1 std, patch conv included
};
InitScheme parse_init_scheme(const std::string& s);  // "vit" | "beit_pretrain"
std::string to_string(InitScheme s);

struct ViTConfig {
  int64_t img_size = 224;          ///< square input side (pixels)
  int64_t patch_size = 16;         ///< square patch side; img_size must be a multiple
  int64_t in_chans = 3;            ///< input channels
  int64_t embed_dim = 768;         ///< token width D
  int64_t depth = 12;              ///< number of blocks
  int64_t num_heads = 12;          ///< attention heads; D must be a multiple
  double mlp_ratio = 4.0;          ///< MLP hidden = D * mlp_ratio
  bool qkv_bias = true;            ///< q_bias/v_bias parameters
  double init_values = 0.0;        ///< layer scale gamma init; 0 = no gamma_1/gamma_2
  bool use_abs_pos_emb = true;     ///< learned absolute position embedding `pos_embed` (1, N+1, D)
  bool use_rel_pos_bias = false;   ///< a relative position bias table in every block
  bool use_shared_rel_pos_bias = false;  ///< one `rel_pos_bias` table shared by all blocks
  bool use_mean_pooling = true;    ///< fc_norm(mean of patch tokens) (no `norm`); else norm then cls token
  int64_t num_classes = 0;         ///< classifier `head` outputs; 0 = no head
  double drop_path_rate = 0.0;     ///< stochastic depth, linear over blocks from 0
  double norm_eps = 1e-6;          ///< LayerNorm epsilon
  double init_scale = 0.001;       ///< head weight/bias multiplier after init
  Activation act = Activation::kGELU;
  InitScheme init = InitScheme::kVit;
  AttentionBackend attention = AttentionBackend::kSdpa;

  template <class V>
  void visit(V& v) {
    v("img_size", img_size);
    v("patch_size", patch_size);
    v("in_chans", in_chans);
    v("embed_dim", embed_dim);
    v("depth", depth);
    v("num_heads", num_heads);
    v("mlp_ratio", mlp_ratio);
    v("qkv_bias", qkv_bias);
    v("init_values", init_values);
    v("use_abs_pos_emb", use_abs_pos_emb);
    v("use_rel_pos_bias", use_rel_pos_bias);
    v("use_shared_rel_pos_bias", use_shared_rel_pos_bias);
    v("use_mean_pooling", use_mean_pooling);
    v("num_classes", num_classes);
    v("drop_path_rate", drop_path_rate);
    v("norm_eps", norm_eps);
    v("init_scale", init_scale);
    v("act", enum_field(act, parse_activation));
    v("init", enum_field(init, parse_init_scheme));
    v("attention", enum_field(attention, parse_attention_backend));
  }

  int64_t grid_size() const { return img_size / patch_size; }
  int64_t num_patches() const { return grid_size() * grid_size(); }

  /// Throws ConfigError naming the field and the bad value; sizes far beyond any real model (img_size > 8192,
  /// embed_dim > 16384, depth or num_heads > 1024, ...) are errors too, so a corrupt config cannot ask for terabytes.
  void validate() const;
  /// Aligned "key  value" lines, one per field.
  std::string to_string() const;
  /// The YAML mapping of every field (what a run directory's config.yaml holds).
  std::string to_yaml() const;
};

/// Throws ConfigError("model.<field> = <value>: <why>"): the one message shape of every model config check.
[[noreturn]] void model_field_fail(const std::string& field, const std::string& value, const std::string& why);

/// Reads a `model:` mapping: optional `preset` (else `base`), then any field overrides. Unknown keys are errors.
ViTConfig vit_config_from_yaml(YamlMap& map, const ViTConfig& base = ViTConfig{});
/// The same for a nested section (config visitors): `config` is the base.
void read_yaml(YamlMap& map, ViTConfig& config);

}  // namespace beitv2
