// VQKD (docs/reference.md §1); reference: microsoft/unilm beit2/modeling_vqkd.py at 768a3c8.
#include "beitv2/models/vqkd.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>
#include <sstream>

#include "beitv2/core/autocast.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/io/safetensors.h"
#include "beitv2/models/registry.h"
#include "beitv2/nn/init.h"

namespace beitv2 {

// ---- config ----

void VqkdConfig::derive() {
  decoder.img_size = encoder.grid_size();
  decoder.patch_size = 1;
  decoder.in_chans = code_dim;
}

void VqkdConfig::validate() const {
  constexpr auto bad = model_field_fail;
  // The tokenizer's own fields first: a bad code_dim must be reported as such, not as the decoder's in_chans.
  if (n_code <= 0) bad("n_code", std::to_string(n_code), "must be positive");
  if (code_dim <= 0) bad("code_dim", std::to_string(code_dim), "must be positive");
  if (target_dim <= 0) bad("target_dim", std::to_string(target_dim), "must be positive");
  if (n_code > (1 << 20)) bad("n_code", std::to_string(n_code), "implausibly large (at most 1048576)");
  if (code_dim > 16384) bad("code_dim", std::to_string(code_dim), "implausibly large (at most 16384)");
  if (target_dim > 16384) bad("target_dim", std::to_string(target_dim), "implausibly large (at most 16384)");
  if (!(decay >= 0 && decay < 1)) bad("decay", std::to_string(decay), "must be in [0, 1)");
  if (dead_code_restart_steps < 0) bad("dead_code_restart_steps", std::to_string(dead_code_restart_steps), ">= 0");
  try {
    encoder.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("encoder: ") + e.what());
  }
  try {
    decoder.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("decoder: ") + e.what());
  }
  if (!encoder.use_mean_pooling || !decoder.use_mean_pooling) {
    bad("encoder/decoder.use_mean_pooling", "false", "VQ-KD reads fc_norm patch tokens: must be true");
  }
  if (encoder.num_classes != 0 || decoder.num_classes != 0) {
    bad("encoder/decoder.num_classes", "non-zero", "VQ-KD encoder and decoder have no head: must be 0");
  }
  if (decoder.img_size != encoder.grid_size() || decoder.patch_size != 1 || decoder.in_chans != code_dim) {
    bad("decoder", "img_size " + std::to_string(decoder.img_size) + ", patch_size " +
                       std::to_string(decoder.patch_size) + ", in_chans " + std::to_string(decoder.in_chans),
        "must be the encoder grid (" + std::to_string(encoder.grid_size()) + "), 1 and code_dim (" +
            std::to_string(code_dim) + ")");
  }
}

std::string VqkdConfig::to_yaml() const { return beitv2::to_yaml(*this); }

namespace {

// docs/reference.md §1.1: both towers are ViT-B (abs pos, no rel pos, no layer scale, mean pooling, no head).
VqkdConfig official(int64_t decoder_depth, int64_t target_dim) {
  VqkdConfig c;
  c.encoder = vit_preset("vit_base_patch16_224");
  c.decoder = vit_preset("vit_base_patch16_224");
  c.decoder.depth = decoder_depth;
  c.target_dim = target_dim;
  c.derive();
  return c;
}

// CPU test size: 32x32 images, 8x8 patches (4x4 grid), width 32, 64 codes of dim 8, 16-d targets.
VqkdConfig test_tiny() {
  VqkdConfig c;
  c.encoder = vit_preset("vit_test_tiny");
  c.decoder = vit_preset("vit_test_tiny");
  c.decoder.depth = 1;
  c.n_code = 64;
  c.code_dim = 8;
  c.target_dim = 16;
  c.derive();
  return c;
}

const PresetTable<VqkdConfig>& vqkd_registry() {
  static const PresetTable<VqkdConfig> r = {
      {"vqkd_encoder_base_decoder_3x768x12_clip", [] { return official(3, 512); }},
      {"vqkd_encoder_base_decoder_1x768x12_clip", [] { return official(1, 512); }},
      {"vqkd_encoder_base_decoder_1x768x12_dino", [] { return official(1, 768); }},
      {"vqkd_test_tiny", [] { return test_tiny(); }},
  };
  return r;
}

}  // namespace

VqkdConfig vqkd_preset(const std::string& name) { return lookup_preset(vqkd_registry(), name, "tokenizer"); }

std::vector<std::string> vqkd_preset_names() { return preset_names(vqkd_registry()); }

VqkdConfig vqkd_config_from_yaml(YamlMap& m) {
  VqkdConfig c;
  apply_preset(m, c, vqkd_preset);
  YamlFieldReader read(m);  // a tower section overrides the preset's tower (or names its own preset)
  c.visit(read);
  m.finish();
  c.derive();
  try {
    c.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(m.file() + ": " + e.what());
  }
  return c;
}

void read_yaml(YamlMap& m, VqkdConfig& c) { c = vqkd_config_from_yaml(m); }

// ---- model ----

VQKDImpl::VQKDImpl(VqkdConfig config) : config_(std::move(config)) {
  config_.derive();
  config_.validate();
  reset();
}

void VQKDImpl::reset() {
  const auto& c = config_;
  encoder = register_module("encoder", VisionTransformer(c.encoder));
  decoder = register_module("decoder", VisionTransformer(c.decoder));
  quantize = register_module(
      "quantize", nn::NormEMAVectorQuantizer(nn::NormEMAVectorQuantizerOptions(c.n_code, c.code_dim)
                                                 .beta(c.beta)
                                                 .decay(c.decay)
                                                 .kmeans_init(c.kmeans_init)
                                                 .dead_code_restart_steps(c.dead_code_restart_steps)));
  const int64_t de = c.encoder.embed_dim, dd = c.decoder.embed_dim;
  encode_task_layer = register_module(
      "encode_task_layer",
      torch::nn::Sequential(torch::nn::Linear(de, de), torch::nn::Tanh(), torch::nn::Linear(de, c.code_dim)));
  decode_task_layer = register_module(
      "decode_task_layer",
      torch::nn::Sequential(torch::nn::Linear(dd, dd), torch::nn::Tanh(), torch::nn::Linear(dd, c.target_dim)));
  torch::NoGradGuard ng;
  for (auto* seq : {&encode_task_layer, &decode_task_layer}) {
    for (auto& m : (*seq)->modules(false)) {
      if (auto* lin = m->as<torch::nn::Linear>()) {
        nn::trunc_normal_(lin->weight, 0.02, -2.0, 2.0);  // timm 0.4.12 trunc_normal_, as the official init
        lin->bias.zero_();
      }
    }
  }
}

void VQKDImpl::pretty_print(std::ostream& os) const {
  os << "beitv2::VQKD(encoder depth " << config_.encoder.depth << ", decoder depth " << config_.decoder.depth
     << ", codes " << config_.n_code << "x" << config_.code_dim << ", target " << config_.target_dim << ")";
}

torch::Tensor VQKDImpl::pre_process(const torch::Tensor& images) const {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "VQKD: expected images (B, 3, H, W), got ", images.sizes());
  auto x = images.to(encoder->cls_token.device());
  if (x.scalar_type() == torch::kUInt8) return x.to(torch::kFloat32) / 127.5 - 1.0;
  x = x.to(torch::kFloat32);
  if (x.max().item<double>() <= 1.0) x = x * 255.0;  // official: [0,1] input is rescaled to [0,255] first
  return x / 127.5 - 1.0;
}

torch::Tensor VQKDImpl::encode_features(const torch::Tensor& x) {
  auto feats = encoder->forward_patch_tokens(x);  // B, N, D
  AutocastOff fp32;                               // the official encode_task_layer runs with autocast off
  return encode_task_layer->forward(feats.to(torch::kFloat32));
}

nn::QuantizerOutput VQKDImpl::encode(const torch::Tensor& x) {
  auto f = encode_features(x);  // B, N, C
  const int64_t g = config_.encoder.grid_size();
  auto map = f.transpose(1, 2).reshape({f.size(0), config_.code_dim, g, g});  // 'b (h w) c -> b c h w'
  return quantize->forward(map);
}

torch::Tensor VQKDImpl::decode(const torch::Tensor& z_q) {
  return decode_task_layer->forward(decoder->forward_patch_tokens(z_q));
}

torch::Tensor VQKDImpl::get_tokens(const torch::Tensor& images) {
  auto x = pre_process(images);
  return encode(x).indices.view({x.size(0), -1});
}

torch::Tensor VQKDImpl::cosine_rec_loss(const torch::Tensor& rec, const torch::Tensor& target) {
  auto t = target / target.norm(2, -1, true);
  auto r = rec / rec.norm(2, -1, true);
  return (1 - (t * r).sum(-1)).mean();
}

VqkdOutput VQKDImpl::forward(const torch::Tensor& images, const torch::Tensor& targets) {
  const int64_t n = config_.encoder.num_patches();
  TORCH_CHECK(targets.dim() == 3 && targets.size(1) == n && targets.size(2) == config_.target_dim,
              "VQKD: teacher targets must be (B, ", n, ", ", config_.target_dim, "), got ", targets.sizes());
  auto x = pre_process(images);
  TORCH_CHECK(targets.size(0) == x.size(0), "VQKD: ", targets.size(0), " targets for ", x.size(0), " images");
  auto q = encode(x);
  auto rec = decode(q.z_q);
  auto rec_loss = cosine_rec_loss(rec, targets.to(rec.device()));
  return {q.loss + rec_loss, q.loss, rec_loss, q.indices.view({x.size(0), -1}), rec};
}

CodebookUsage codebook_usage(const torch::Tensor& ids, int64_t n_code) {
  CodebookUsage u;
  u.n_code = n_code;
  auto flat = ids.reshape({-1}).to(torch::kCPU, torch::kLong);
  u.tokens = flat.numel();
  TORCH_CHECK(u.tokens == 0 || (flat.min().item<int64_t>() >= 0 && flat.max().item<int64_t>() < n_code),
              "codebook_usage: ids outside [0, ", n_code, ")");
  u.counts = torch::bincount(flat, {}, n_code);
  u.used = u.counts.gt(0).sum().item<int64_t>();
  if (u.tokens > 0) {
    auto p = u.counts.to(torch::kDouble) / static_cast<double>(u.tokens);
    u.perplexity = std::exp(-(p * torch::log(p.clamp_min(1e-300))).sum().item<double>());
  }
  return u;
}

std::string CodebookUsage::to_string() const {
  std::ostringstream os;
  os << tokens << " tokens use " << used << " of " << n_code << " codes (" << (n_code ? 100.0 * used / n_code : 0)
     << "%), perplexity " << perplexity;
  return os.str();
}

std::set<std::string> VQKDImpl::no_weight_decay() const {
  return {"quantize.embedding.weight", "decoder.cls_token", "decoder.pos_embed", "encoder.cls_token",
          "encoder.pos_embed"};
}

// ---- loading a trained tokenizer ----

VqkdConfig tokenizer_config(const std::filesystem::path& weights, const Metadata& meta, const std::string& preset) {
  if (!preset.empty()) return vqkd_preset(preset);
  const auto format = meta.find("format");
  const auto config = meta.find("config");
  if (format == meta.end() || format->second != "beitv2-tokenizer" || config == meta.end()) {
    throw ConfigError(weights.string() + ": no tokenizer config stored in the file (not written by train-vqkd): "
                      "name its registered preset (e.g. vqkd_encoder_base_decoder_3x768x12_clip)");
  }
  if (config->second.size() > (1u << 20)) {
    throw ConfigError(weights.string() + ": the stored tokenizer config is implausibly large (" +
                      std::to_string(config->second.size()) + " bytes)");
  }
  const std::string label = weights.string() + " (stored config)";
  const YAML::Node root = load_yaml_text(config->second, label);
  if (!root.IsMap() || root.size() == 0) {
    throw ConfigError(label + ": the stored tokenizer config is empty or not a mapping (a damaged file?): "
                      "name its registered preset instead");
  }
  YamlMap m(root, label, "model");
  return vqkd_config_from_yaml(m);
}

VQKD load_tokenizer(const std::filesystem::path& weights, const std::string& preset, torch::Device device) {
  const auto file = read_safetensors(weights);
  VQKD vq(tokenizer_config(weights, file.metadata, preset));
  load_state_dict(*vq, file.tensors, {}, weights.string());
  vq->to(device);
  vq->eval();
  for (auto& p : vq->parameters()) p.set_requires_grad(false);
  return vq;
}

}  // namespace beitv2
