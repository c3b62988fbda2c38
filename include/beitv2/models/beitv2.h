#pragma once
// BEiT v2 masked-image-modelling model with the patch-aggregation (CLS-pretraining) head (Peng et al. 2022,
// arXiv 2208.06366 §2.2-2.3; official microsoft/unilm beit2/modeling_pretrain.py
// `VisionTransformerForMaskedImageModelingCLS` at 768a3c8; docs/reference.md §3.1-3.3).
//
// A ViT backbone (shared relative position bias, no absolute positions, layer scale) whose masked patch
// embeddings are replaced by a learned `mask_token`; `lm_head` predicts the tokenizer id of every masked patch
// from the final-normed tokens. The CLS head concatenates the last block's cls token with the patch tokens
// after block `early_layers`, runs them through `head_layers` extra blocks (`cls_pt_layers`, same shared bias)
// and predicts the same ids through the shared `norm` + `lm_head` (or its own `cls_pt_norm`/`cls_pt_lm_head`).
// Parameter names are the official ones (docs/reference.md §7), so official state dicts load 1:1.
// Divergences: none.

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

/// The MIM model's configuration: a ViT backbone plus the prediction heads.
struct BeitV2Config {
  /// Backbone. Official pretraining: use_shared_rel_pos_bias on, use_abs_pos_emb off, init_values 0.1 (base)
  /// / 1e-5 (large); use_mean_pooling must be false (every token goes through `norm`), num_classes 0 (the
  /// model predicts with `lm_head`), init beit_pretrain (trunc_normal cut at ±1 std, docs/reference.md §3.3).
  ViTConfig backbone = default_backbone();
  int64_t vocab_size = 8192;    ///< tokenizer codebook size = lm_head outputs
  int64_t early_layers = 9;     ///< the CLS head reads the patch tokens after this many blocks (1..depth)
  int64_t head_layers = 2;      ///< blocks in the CLS head (`cls_pt_layers`); 0 = no CLS head
  bool shared_lm_head = true;   ///< the CLS head reuses `norm` and `lm_head`; else own cls_pt_norm/lm_head

  template <class V>
  void visit(V& v) {
    v("backbone", backbone);
    v("vocab_size", vocab_size);
    v("early_layers", early_layers);
    v("head_layers", head_layers);
    v("shared_lm_head", shared_lm_head);
  }

  /// ViT-B/16 as pretrained (docs/reference.md §3.1).
  static ViTConfig default_backbone();
  bool has_cls_head() const { return head_layers > 0; }
  /// Throws ConfigError naming the field (`model.<field>` / `model.backbone.<field>`) and the bad value.
  void validate() const;
  /// Aligned "key  value" lines, one per field (backbone fields prefixed `backbone.`).
  std::string to_string() const;
};

class YamlMap;
/// A `model:` section: optional `preset` (a registered MIM size), then field overrides (`backbone:` is a ViT
/// section). Unknown keys are errors; the result is validated.
void read_yaml(YamlMap& map, BeitV2Config& config);

/// Registered MIM sizes: beitv2_base_patch16_224, beitv2_large_patch16_224, beitv2_tiny_patch8_64 (a CPU demo
/// size matching configs/vqkd_tiny_photos.yaml's tokenizer: 64x64 images, 8x8 grid, 256 codes) and
/// beitv2_test_tiny (tests: 32x32 images, 8x8 patches, width 32, depth 2, early_layers 1, 64 codes).
/// Throws std::invalid_argument listing the known names otherwise.
BeitV2Config beitv2_preset(const std::string& name);
std::vector<std::string> beitv2_preset_names();

/// What forward returns: logits at the masked positions only, batch-major then raster order.
struct MimOutput {
  torch::Tensor logits;      ///< (M, vocab) from the last block
  torch::Tensor cls_logits;  ///< (M, vocab) from the CLS head; undefined without one
};

/// The official per-step losses and accuracies (beit2/engine_for_pretraining.py).
struct MimLoss {
  torch::Tensor loss;      ///< loss_1 + loss_2 (loss_1 alone without a CLS head)
  torch::Tensor loss_1;    ///< mean cross entropy of `logits`
  torch::Tensor loss_2;    ///< mean cross entropy of `cls_logits`; undefined without a CLS head
  torch::Tensor mlm_acc_1; ///< argmax accuracy of `logits` (0-dim, detached: no host sync)
  torch::Tensor mlm_acc_2; ///< argmax accuracy of `cls_logits`; undefined without a CLS head
};
/// out + labels (M) int64 (tokenizer ids at the masked positions, e.g. ids.index({mask})) -> losses: plain
/// mean cross entropy per head, no label smoothing.
MimLoss mim_loss(const MimOutput& out, const torch::Tensor& labels);

/// Example:
///   auto mim = BeitV2ForMIM(beitv2_preset("beitv2_base_patch16_224"));
///   auto out = mim->forward(images, mask);  // (B,3,224,224) normalised, (B,196) bool -> 2 x (M, 8192)
///   auto l = mim_loss(out, ids.index({mask}));  l.loss.backward();
class BeitV2ForMIMImpl : public torch::nn::Cloneable<BeitV2ForMIMImpl> {
 public:
  explicit BeitV2ForMIMImpl(const BeitV2Config& config);
  /// Builds all submodules and initialises them (init_weights).
  void reset() override;
  /// The official init, in one place (docs/reference.md §3.3): trunc_normal(.02) cut at ±1 std for cls/mask
  /// tokens, pos_embed, every Linear weight of the backbone and heads and the patch conv; biases 0; LN (1, 0);
  /// rel-pos tables and q/v biases 0; gammas = init_values; blocks[i] attn.proj/mlp.fc2 weights divided by
  /// sqrt(2(i+1)). The CLS head blocks are built after that pass officially, so they get PyTorch's default
  /// Linear init (kaiming-uniform weights, uniform biases), then a division by sqrt(2(early_layers+j+1)).
  void init_weights();
  void pretty_print(std::ostream& os) const override;

  /// Patch embedding, masked positions replaced by mask_token (x·(1−w) + mask_token·w), cls prepended,
  /// pos_embed added when present. x (B, C, H, W); mask (B, N) bool or undefined (= nothing masked).
  /// Returns (B, 1+N, D).
  torch::Tensor embed(const torch::Tensor& x, const torch::Tensor& mask = {});
  /// The shared relative position bias (H, 1+N, 1+N), or undefined when the backbone has none.
  torch::Tensor shared_bias();
  /// All tokens (B, 1+N, D) after the blocks and the final `norm`; also the outputs of the blocks in `indices`
  /// (pre-norm, all tokens, in the order of `indices`). For downstream feature extraction.
  torch::Tensor forward_intermediates(const torch::Tensor& x, const torch::Tensor& mask,
                                      const std::vector<int64_t>& indices, std::vector<torch::Tensor>& intermediates);
  /// All tokens (B, 1+N, D) after the final `norm` (the backbone path only; the CLS head is not run).
  torch::Tensor forward_features(const torch::Tensor& x, const torch::Tensor& mask = {});
  /// The official forward_features: the normed tokens of the backbone and of the CLS head, both (B, 1+N, D);
  /// the second is undefined without a CLS head.
  std::pair<torch::Tensor, torch::Tensor> forward_tokens(const torch::Tensor& x, const torch::Tensor& mask);
  /// x (B, C, H, W) normalised images, mask (B, N) bool -> logits at the masked positions (M, vocab) of both heads.
  MimOutput forward(const torch::Tensor& x, const torch::Tensor& mask);

  /// Parameter names excluded from weight decay (docs/reference.md §4): cls_token, and pos_embed when present.
  /// mask_token and the rel-pos table DO decay, as officially.
  std::set<std::string> no_weight_decay() const;
  /// Switches every block between the fused SDPA kernel and the reference path.
  void set_attention_backend(AttentionBackend backend);

  const BeitV2Config& config() const { return config_; }

  nn::PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token;                         // (1, 1, D)
  torch::Tensor mask_token;                        // (1, 1, D)
  torch::Tensor pos_embed;                         // (1, 1+N, D), when use_abs_pos_emb
  nn::RelativePositionBias rel_pos_bias{nullptr};  // when use_shared_rel_pos_bias
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};
  torch::nn::ModuleList cls_pt_layers{nullptr};    // when head_layers > 0
  torch::nn::LayerNorm cls_pt_norm{nullptr};       // when head_layers > 0 and !shared_lm_head
  torch::nn::Linear cls_pt_lm_head{nullptr};       // when head_layers > 0 and !shared_lm_head

 private:
  nn::BlockOptions block_options(double drop_path) const;
  BeitV2Config config_;
};
TORCH_MODULE(BeitV2ForMIM);

}  // namespace beitv2
