#pragma once
// VQ-KD visual tokenizer (Peng et al. 2022 §2.1; official beit2/modeling_vqkd.py at 768a3c8; docs/reference.md §1):
// ViT encoder -> encode_task_layer (fp32) -> NormEMAVectorQuantizer -> ViT decoder over the (B, code_dim,
// grid, grid) code map (1x1 patches) -> decode_task_layer -> cosine loss against a teacher's patch features.
// The teacher is not part of this module (teacher/ provides it); forward() takes its targets.
// Divergences: those of the quantizer (nn/vector_quantizer.h).

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <set>
#include <filesystem>
#include <string>
#include <vector>

#include "beitv2/io/safetensors.h"
#include "beitv2/models/vit.h"
#include "beitv2/nn/vector_quantizer.h"

namespace beitv2 {

class YamlMap;

struct VqkdConfig {
  ViTConfig encoder;                  ///< patch-token encoder (mean-pooling mode: fc_norm on every patch)
  ViTConfig decoder;                  ///< img_size = encoder grid, patch 1, in_chans = code_dim (derived)
  int64_t n_code = 8192;              ///< codebook size
  int64_t code_dim = 32;              ///< code dimension
  int64_t target_dim = 512;           ///< teacher feature dim: 512 (CLIP ViT-B/16 proj), 768 (DINO ViT-B/16)
  double decay = 0.99;                ///< codebook EMA decay
  double beta = 1.0;                  ///< commitment loss weight
  bool kmeans_init = true;            ///< k-means codebook init on the first forward
  int64_t dead_code_restart_steps = 0;  ///< 0 = off (the reference)

  template <class V>
  void visit(V& v) {
    v("encoder", encoder);
    v("decoder", decoder);
    v("n_code", n_code);
    v("code_dim", code_dim);
    v("target_dim", target_dim);
    v("decay", decay);
    v("beta", beta);
    v("kmeans_init", kmeans_init);
    v("dead_code_restart_steps", dead_code_restart_steps);
  }

  /// Sets the decoder's derived fields from the encoder and code_dim.
  void derive();
  /// Throws ConfigError naming the field.
  void validate() const;
  std::string to_yaml() const;
};

/// `model:` mapping: optional `preset`, scalar overrides, and `encoder:` / `decoder:` sub-mappings read as
/// ViT configs (each may name its own preset or override fields). Unknown keys are errors.
VqkdConfig vqkd_config_from_yaml(YamlMap& map);
/// The same for a nested section (config visitors).
void read_yaml(YamlMap& map, VqkdConfig& config);
/// Registered tokenizers: the three official ones and tiny CPU sizes. Throws std::invalid_argument otherwise.
VqkdConfig vqkd_preset(const std::string& name);
std::vector<std::string> vqkd_preset_names();

struct VqkdOutput {
  torch::Tensor loss;        // quant_loss + rec_loss
  torch::Tensor quant_loss;  // commitment
  torch::Tensor rec_loss;    // mean(1 - cos(rec, target))
  torch::Tensor indices;     // (B, N) code ids
  torch::Tensor rec;         // (B, N, target_dim)
};

/// How a set of token ids uses the codebook.
struct CodebookUsage {
  int64_t tokens = 0;        ///< ids counted
  int64_t used = 0;          ///< distinct codes seen
  int64_t n_code = 0;        ///< codebook size
  double perplexity = 0;     ///< exp(entropy of the code histogram); n_code when perfectly uniform
  torch::Tensor counts;      ///< (n_code) int64 histogram
  std::string to_string() const;
};
/// Histogram of `ids` (any shape, values in [0, n_code)).
CodebookUsage codebook_usage(const torch::Tensor& ids, int64_t n_code);

/// Example (tokenising):
///   auto vq = VQKD(vqkd_preset("vqkd_encoder_base_decoder_3x768x12_clip"));
///   load_weights(*vq, "tokenizer.safetensors"); vq->eval();
///   auto ids = vq->get_tokens(uint8_images);  // (B, 3, 224, 224) uint8 or [0,1] float -> (B, 196) int64
class VQKDImpl : public torch::nn::Cloneable<VQKDImpl> {
 public:
  explicit VQKDImpl(VqkdConfig config);
  void reset() override;
  void pretty_print(std::ostream& os) const override;

  /// Images (B, 3, H, W), uint8 in [0, 255] or float in [0, 1] (a float batch whose max exceeds 1 is taken as
  /// [0, 255], as the official pre_process) -> float [-1, 1].
  torch::Tensor pre_process(const torch::Tensor& images) const;
  /// Pre-processed images -> encoder patch features through encode_task_layer (fp32): (B, N, code_dim).
  torch::Tensor encode_features(const torch::Tensor& x);
  /// Pre-processed images -> quantizer output (z_q (B, code_dim, g, g), loss, ids (B*N)).
  nn::QuantizerOutput encode(const torch::Tensor& x);
  /// (B, code_dim, g, g) -> reconstructed teacher features (B, N, target_dim).
  torch::Tensor decode(const torch::Tensor& z_q);
  /// Images -> code ids (B, N). Same side effects as the official get_tokens (the usage statistics update).
  torch::Tensor get_tokens(const torch::Tensor& images);
  /// Images and teacher targets (B, N, target_dim) -> losses (training step or evaluation).
  VqkdOutput forward(const torch::Tensor& images, const torch::Tensor& targets);

  /// mean over tokens of 1 - cos(rec, target).
  static torch::Tensor cosine_rec_loss(const torch::Tensor& rec, const torch::Tensor& target);
  /// The official no_weight_decay set.
  std::set<std::string> no_weight_decay() const;
  const VqkdConfig& config() const { return config_; }

  VisionTransformer encoder{nullptr}, decoder{nullptr};
  nn::NormEMAVectorQuantizer quantize{nullptr};
  torch::nn::Sequential encode_task_layer{nullptr}, decode_task_layer{nullptr};

 private:
  VqkdConfig config_;
};
TORCH_MODULE(VQKD);

/// A tokenizer's config for a weights file: the registered `preset` when given, else the config train-vqkd stored
/// in the file's metadata (format beitv2-tokenizer). Throws ConfigError naming the file when neither exists or
/// the stored config is broken.
VqkdConfig tokenizer_config(const std::filesystem::path& weights, const Metadata& metadata,
                            const std::string& preset = "");

/// A frozen tokenizer: tokenizer_config + a strict load of every tensor, eval mode, no gradients, on `device`.
VQKD load_tokenizer(const std::filesystem::path& weights, const std::string& preset, torch::Device device);

}  // namespace beitv2
