// ViTConfig (validation, printing, YAML) and the registry of named sizes.
#include "beitv2/models/registry.h"

#include <functional>
#include <iomanip>
#include <map>
#include <sstream>
#include <stdexcept>

#include "beitv2/core/config_yaml.h"

namespace beitv2 {

InitScheme parse_init_scheme(const std::string& s) {
  if (s == "vit") return InitScheme::kVit;
  if (s == "beit_pretrain") return InitScheme::kBeitPretrain;
  throw std::invalid_argument("unknown init scheme '" + s + "' (expected vit or beit_pretrain)");
}

std::string to_string(InitScheme s) { return s == InitScheme::kVit ? "vit" : "beit_pretrain"; }

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& value, const std::string& why) {
  throw ConfigError("model." + field + " = " + value + ": " + why);
}

// Every field once, for printing and YAML: name and its value as text.
std::vector<std::pair<std::string, std::string>> fields(const ViTConfig& c) {
  auto num = [](double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  auto flag = [](bool b) { return std::string(b ? "true" : "false"); };
  return {
      {"img_size", std::to_string(c.img_size)},
      {"patch_size", std::to_string(c.patch_size)},
      {"in_chans", std::to_string(c.in_chans)},
      {"embed_dim", std::to_string(c.embed_dim)},
      {"depth", std::to_string(c.depth)},
      {"num_heads", std::to_string(c.num_heads)},
      {"mlp_ratio", num(c.mlp_ratio)},
      {"qkv_bias", flag(c.qkv_bias)},
      {"init_values", num(c.init_values)},
      {"use_abs_pos_emb", flag(c.use_abs_pos_emb)},
      {"use_rel_pos_bias", flag(c.use_rel_pos_bias)},
      {"use_shared_rel_pos_bias", flag(c.use_shared_rel_pos_bias)},
      {"use_mean_pooling", flag(c.use_mean_pooling)},
      {"num_classes", std::to_string(c.num_classes)},
      {"drop_path_rate", num(c.drop_path_rate)},
      {"norm_eps", num(c.norm_eps)},
      {"init_scale", num(c.init_scale)},
      {"act", to_string(c.act)},
      {"init", to_string(c.init)},
      {"attention", to_string(c.attention)},
  };
}

}  // namespace

void ViTConfig::validate() const {
  auto positive = [](const char* f, int64_t v) {
    if (v <= 0) bad(f, std::to_string(v), "must be positive");
  };
  positive("img_size", img_size);
  positive("patch_size", patch_size);
  positive("in_chans", in_chans);
  positive("embed_dim", embed_dim);
  positive("depth", depth);
  positive("num_heads", num_heads);
  if (img_size % patch_size != 0) {
    bad("img_size", std::to_string(img_size), "not divisible by patch_size " + std::to_string(patch_size));
  }
  if (embed_dim % num_heads != 0) {
    bad("embed_dim", std::to_string(embed_dim), "not divisible by num_heads " + std::to_string(num_heads));
  }
  if (!(mlp_ratio > 0)) bad("mlp_ratio", std::to_string(mlp_ratio), "must be positive");
  if (init_values < 0) bad("init_values", std::to_string(init_values), "must be >= 0 (0 disables layer scale)");
  if (num_classes < 0) bad("num_classes", std::to_string(num_classes), "must be >= 0 (0 = no head)");
  if (!(drop_path_rate >= 0 && drop_path_rate < 1)) {
    bad("drop_path_rate", std::to_string(drop_path_rate), "must be in [0, 1)");
  }
  if (!(norm_eps > 0)) bad("norm_eps", std::to_string(norm_eps), "must be positive");
}

std::string ViTConfig::to_string() const {
  std::ostringstream os;
  for (const auto& [k, v] : fields(*this)) os << "  " << std::left << std::setw(26) << k << v << "\n";
  return os.str();
}

std::string ViTConfig::to_yaml() const {
  std::ostringstream os;
  for (const auto& [k, v] : fields(*this)) os << k << ": " << v << "\n";
  return os.str();
}

ViTConfig vit_config_from_yaml(YamlMap& m, const ViTConfig& base) {
  ViTConfig c = base;
  if (m.has("preset")) {
    std::string name;
    m.get("preset", name);
    try {
      c = vit_preset(name);
    } catch (const std::invalid_argument& e) {
      m.fail("preset", e.what());
    }
  }
  m.get("img_size", c.img_size);
  m.get("patch_size", c.patch_size);
  m.get("in_chans", c.in_chans);
  m.get("embed_dim", c.embed_dim);
  m.get("depth", c.depth);
  m.get("num_heads", c.num_heads);
  m.get("mlp_ratio", c.mlp_ratio);
  m.get("qkv_bias", c.qkv_bias);
  m.get("init_values", c.init_values);
  m.get("use_abs_pos_emb", c.use_abs_pos_emb);
  m.get("use_rel_pos_bias", c.use_rel_pos_bias);
  m.get("use_shared_rel_pos_bias", c.use_shared_rel_pos_bias);
  m.get("use_mean_pooling", c.use_mean_pooling);
  m.get("num_classes", c.num_classes);
  m.get("drop_path_rate", c.drop_path_rate);
  m.get("norm_eps", c.norm_eps);
  m.get("init_scale", c.init_scale);
  auto enum_field = [&m](const char* key, auto parse, auto& out) {
    if (!m.has(key)) return;
    std::string s;
    m.get(key, s);
    try {
      out = parse(s);
    } catch (const std::invalid_argument& e) {
      m.fail(key, e.what());
    }
  };
  enum_field("act", parse_activation, c.act);
  enum_field("init", parse_init_scheme, c.init);
  enum_field("attention", parse_attention_backend, c.attention);
  m.finish();
  try {
    c.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(m.file() + ": " + e.what());
  }
  return c;
}

// ---- registry ----

namespace {

ViTConfig vit(int64_t dim, int64_t depth, int64_t heads) {
  ViTConfig c;
  c.embed_dim = dim;
  c.depth = depth;
  c.num_heads = heads;
  return c;
}

// BEiT v2 backbone as fine-tuned (SPEC §5): per-block rel-pos bias, layer scale, no abs pos, mean pooling.
ViTConfig beitv2(ViTConfig c, double init_values) {
  c.use_abs_pos_emb = false;
  c.use_rel_pos_bias = true;
  c.init_values = init_values;
  return c;
}

// Tiny CPU test size: 32x32 images, 8x8 patches (4x4 grid), width 32, 2 blocks, 2 heads.
ViTConfig test_tiny() {
  ViTConfig c = vit(32, 2, 2);
  c.img_size = 32;
  c.patch_size = 8;
  return c;
}

const PresetTable<ViTConfig>& registry() {
  static const PresetTable<ViTConfig> r = {
      {"vit_tiny_patch16_224", [] { return vit(192, 12, 3); }},
      {"vit_small_patch16_224", [] { return vit(384, 12, 6); }},
      {"vit_base_patch16_224", [] { return vit(768, 12, 12); }},
      {"vit_large_patch16_224", [] { return vit(1024, 24, 16); }},
      {"beitv2_base_patch16_224", [] { return beitv2(vit(768, 12, 12), 0.1); }},
      {"beitv2_large_patch16_224", [] { return beitv2(vit(1024, 24, 16), 1e-5); }},
      {"vit_test_tiny", [] { return test_tiny(); }},
      {"beitv2_test_tiny", [] { return beitv2(test_tiny(), 0.1); }},
  };
  return r;
}

}  // namespace

ViTConfig vit_preset(const std::string& name) { return lookup_preset(registry(), name, "model"); }

std::vector<std::string> vit_preset_names() { return preset_names(registry()); }

VisionTransformer create_vit(const std::string& name) { return VisionTransformer(vit_preset(name)); }

}  // namespace beitv2
