#pragma once
// Vision Transformer as used by BEiT v2 and VQ-KD (official beit2/modeling_finetune.py `VisionTransformer`,
// timm/models/beit.py `Beit`). Paper: Peng et al. 2022, arXiv 2208.06366; reference repo microsoft/unilm
// beit2/ at 768a3c8. Parameter names are the official ones (docs/reference.md §7), so state dicts map 1:1.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <set>
#include <string>
#include <vector>

#include "beitv2/models/vit_config.h"
#include "beitv2/nn/patch_embed.h"
#include "beitv2/nn/rel_pos_bias.h"
#include "beitv2/nn/vit_block.h"

namespace beitv2 {

/// Example:
///   auto vit = VisionTransformer(vit_preset("vit_base_patch16_224"));
///   auto feats = vit->forward(images);  // (B,3,224,224) normalised -> (B,768) pooled features
class VisionTransformerImpl : public torch::nn::Cloneable<VisionTransformerImpl> {
 public:
  explicit VisionTransformerImpl(const ViTConfig& config);
  /// Builds all submodules and initialises them (init_weights).
  void reset() override;
  /// The init of the config's scheme, in one place: trunc_normal Linear weights, zero biases, LN (1, 0),
  /// cls/pos tokens, layer-scale constants, then the fix_init_weight rescale of blocks[i].attn.proj and
  /// blocks[i].mlp.fc2 by 1/sqrt(2(i+1)), then head *= init_scale.
  void init_weights();
  void pretty_print(std::ostream& os) const override;

  /// Patch embedding + cls token + absolute position embedding: (B, C, H, W) -> (B, 1+N, D).
  torch::Tensor embed(const torch::Tensor& x);
  /// The shared relative position bias (H, 1+N, 1+N), or undefined when the model has none.
  torch::Tensor shared_bias();
  /// (B, C, H, W) -> (B, 1+N, D): all tokens after the blocks and the final `norm` (none with mean pooling).
  torch::Tensor forward_features(const torch::Tensor& x);
  /// Like forward_features, also returning the outputs of the blocks in `indices` (pre-norm, all tokens).
  torch::Tensor forward_intermediates(const torch::Tensor& x, const std::vector<int64_t>& indices,
                                      std::vector<torch::Tensor>& intermediates);
  /// tokens (B, 1+N, D) -> pooled (B, D) (fc_norm(mean of patch tokens), or cls) -> head (B, num_classes).
  /// With pre_logits the pooled features are returned.
  torch::Tensor forward_head(const torch::Tensor& tokens, bool pre_logits = false);
  /// (B, C, H, W) -> per-patch features (B, N, D): fc_norm on every patch token with mean pooling (official
  /// return_patch_tokens, the VQ-KD encoder output), else the normed patch tokens.
  torch::Tensor forward_patch_tokens(const torch::Tensor& x);
  /// forward_head(forward_features(x)).
  torch::Tensor forward(const torch::Tensor& x);

  /// Parameter names excluded from weight decay by the official code: {cls_token, pos_embed} when present.
  std::set<std::string> no_weight_decay() const;
  /// Layer id for layer-wise lr decay (docs/reference.md §5): 0 for cls_token/mask_token/pos_embed/patch_embed,
  /// i+1 for blocks.i, depth+1 for everything else (rel_pos_bias, norms, head).
  int64_t layer_id_for(const std::string& name) const;
  /// Replaces the classifier with a fresh one of `num_classes` outputs (0 removes it); initialised as at build.
  void reset_classifier(int64_t num_classes);
  /// Switches every block between the fused SDPA kernel and the reference path.
  void set_attention_backend(AttentionBackend backend);

  const ViTConfig& config() const { return config_; }

  nn::PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token;                    // (1, 1, D)
  torch::Tensor pos_embed;                    // (1, 1+N, D), when use_abs_pos_emb
  nn::RelativePositionBias rel_pos_bias{nullptr};  // when use_shared_rel_pos_bias
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};         // when !use_mean_pooling
  torch::nn::LayerNorm fc_norm{nullptr};      // when use_mean_pooling
  torch::nn::Linear head{nullptr};            // when num_classes > 0

 private:
  void init_head();
  ViTConfig config_;
};
TORCH_MODULE(VisionTransformer);

}  // namespace beitv2
