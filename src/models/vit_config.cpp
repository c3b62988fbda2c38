// ViTConfig: parsing of its enums, validation, YAML (its fields are named once, in ViTConfig::visit).
#include "beitv2/models/vit_config.h"

#include <stdexcept>

#include "beitv2/core/config_yaml.h"
#include "beitv2/models/registry.h"

namespace beitv2 {

InitScheme parse_init_scheme(const std::string& s) {
  if (s == "vit") return InitScheme::kVit;
  if (s == "beit_pretrain") return InitScheme::kBeitPretrain;
  throw std::invalid_argument("unknown init scheme '" + s + "' (expected vit or beit_pretrain)");
}

std::string to_string(InitScheme s) { return s == InitScheme::kVit ? "vit" : "beit_pretrain"; }

void model_field_fail(const std::string& field, const std::string& value, const std::string& why) {
  config_fail("model." + field, value, why);
}

namespace {
constexpr auto bad = model_field_fail;
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
  // Far above any real model, low enough that a corrupt config (e.g. one stored in a weights file) cannot ask
  // for terabytes.
  auto at_most = [](const char* f, int64_t v, int64_t limit) {
    if (v > limit) bad(f, std::to_string(v), "implausibly large (at most " + std::to_string(limit) + ")");
  };
  at_most("img_size", img_size, 8192);
  at_most("in_chans", in_chans, 1024);
  at_most("embed_dim", embed_dim, 16384);
  at_most("depth", depth, 1024);
  at_most("num_heads", num_heads, 1024);
  at_most("num_classes", num_classes, 1 << 20);
  if (mlp_ratio > 64) bad("mlp_ratio", std::to_string(mlp_ratio), "implausibly large (at most 64)");
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

std::string ViTConfig::to_string() const { return to_table(*this); }

std::string ViTConfig::to_yaml() const { return beitv2::to_yaml(*this); }

ViTConfig vit_config_from_yaml(YamlMap& m, const ViTConfig& base) {
  ViTConfig c = base;
  apply_preset(m, c, vit_preset);
  YamlFieldReader read(m);
  c.visit(read);
  m.finish();
  try {
    c.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(m.file() + ": " + e.what());
  }
  return c;
}

void read_yaml(YamlMap& m, ViTConfig& c) { c = vit_config_from_yaml(m, c); }

}  // namespace beitv2
