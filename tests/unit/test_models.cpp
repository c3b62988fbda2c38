// VisionTransformer properties, the registry, and ViTConfig from YAML.
#include <fstream>

#include "beitv2/beitv2.h"
#include "common.h"

namespace beitv2 {
namespace {

using test::close;
class Vit : public test::Seeded {};

ViTConfig tiny(bool shared = false) {
  ViTConfig c = vit_preset("vit_test_tiny");
  if (shared) {
    c.use_abs_pos_emb = false;
    c.use_shared_rel_pos_bias = true;
    c.init_values = 0.1;
    c.use_mean_pooling = false;
  }
  c.num_classes = 3;
  return c;
}

int64_t count_params(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// Parameters of a ViT by formula, to check every registered size.
int64_t expected_params(const ViTConfig& c) {
  const int64_t D = c.embed_dim, P = c.patch_size, N = c.num_patches(), H = c.num_heads;
  const int64_t hidden = static_cast<int64_t>(D * c.mlp_ratio);
  const int64_t table = c.use_rel_pos_bias || c.use_shared_rel_pos_bias
                            ? ((2 * c.grid_size() - 1) * (2 * c.grid_size() - 1) + 3) * H
                            : 0;
  int64_t block = 2 * 2 * D + 3 * D * D + (c.qkv_bias ? 2 * D : 0) + D * D + D + D * hidden + hidden + hidden * D + D;
  if (c.init_values > 0) block += 2 * D;
  if (c.use_rel_pos_bias) block += table;
  int64_t n = c.in_chans * P * P * D + D + D + c.depth * block + 2 * D;
  if (c.use_abs_pos_emb) n += (N + 1) * D;
  if (c.use_shared_rel_pos_bias) n += table;
  if (c.num_classes > 0) n += D * c.num_classes + c.num_classes;
  return n;
}

TEST_F(Vit, EveryRegisteredModelBuildsWithTheExpectedSize) {
  for (const auto& name : vit_preset_names()) {
    auto cfg = vit_preset(name);
    cfg.depth = std::min<int64_t>(cfg.depth, 2);  // full depth adds nothing but time; the formula covers it
    VisionTransformer vit(cfg);
    EXPECT_EQ(count_params(*vit), expected_params(cfg)) << name;
  }
  // timm's vit_base_patch16_224 without head has 85,798,656; BEiT's k has no bias: 12 x 768 fewer.
  EXPECT_EQ(expected_params(vit_preset("vit_base_patch16_224")), 85798656 - 12 * 768);
  auto base = vit_preset("beitv2_base_patch16_224");
  base.num_classes = 1000;
  EXPECT_NEAR(expected_params(base) / 1e6, 86.5, 0.1);  // docs/reference.md §6: 86.5M
}

TEST(Registry, UnknownNameListsKnownOnes) {
  try {
    vit_preset("vit_huge_patch99");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model 'vit_huge_patch99'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("vit_base_patch16_224"), std::string::npos);
  }
}

TEST_F(Vit, OfficialParameterNames) {
  VisionTransformer shared(tiny(true));
  auto sd = state_dict(*shared);
  for (const char* k : {"cls_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
                        "rel_pos_bias.relative_position_bias_table", "rel_pos_bias.relative_position_index",
                        "blocks.1.gamma_1", "blocks.1.gamma_2", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias",
                        "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.bias", "blocks.0.mlp.fc1.weight",
                        "blocks.0.mlp.fc2.bias", "blocks.0.norm1.weight", "norm.weight", "head.weight"}) {
    EXPECT_TRUE(sd.count(k)) << k;
  }
  EXPECT_FALSE(sd.count("pos_embed"));
  EXPECT_FALSE(sd.count("fc_norm.weight"));
  EXPECT_FALSE(sd.count("blocks.0.attn.k_bias"));
  VisionTransformer abs(tiny());
  auto sd2 = state_dict(*abs);
  EXPECT_TRUE(sd2.count("pos_embed") && sd2.count("fc_norm.bias"));
  EXPECT_FALSE(sd2.count("norm.weight") || sd2.count("blocks.0.gamma_1"));
  EXPECT_EQ(sd2.at("pos_embed").sizes(), torch::IntArrayRef({1, 17, 32}));
}

TEST_F(Vit, InitFollowsTheScheme) {
  auto c = vit_preset("vit_small_patch16_224");
  c.depth = 4;
  c.num_classes = 10;
  VisionTransformer vit(c);
  // Linear weights ~ trunc_normal(.02), attn.proj / fc2 divided by sqrt(2(i+1)), biases zero, LN (1, 0).
  EXPECT_NEAR(vit->blocks[0]->as<nn::Block>()->attn->qkv->weight.std().item<double>(), 0.02, 0.001);
  for (int i = 0; i < 4; ++i) {
    auto* b = vit->blocks[i]->as<nn::Block>();
    EXPECT_NEAR(b->mlp->fc2->weight.std().item<double>(), 0.02 / std::sqrt(2.0 * (i + 1)), 0.001) << i;
    EXPECT_EQ(b->mlp->fc1->bias.abs().max().item<double>(), 0.0);
    EXPECT_TRUE(torch::equal(b->norm1->weight, torch::ones({384})));
  }
  EXPECT_NEAR(vit->head->weight.std().item<double>(), 0.02 * 0.001, 0.0001 * 0.001 * 20);
  EXPECT_NEAR(vit->cls_token.std().item<double>(), 0.02, 0.005);
  // Pretraining scheme: everything truncated at one std, patch conv included.
  c.init = InitScheme::kBeitPretrain;
  VisionTransformer pre(c);
  EXPECT_LE(pre->patch_embed->proj->weight.abs().max().item<double>(), 0.02);
  EXPECT_LE(pre->blocks[0]->as<nn::Block>()->attn->qkv->weight.abs().max().item<double>(), 0.02);
  EXPECT_EQ(pre->patch_embed->proj->bias.abs().max().item<double>(), 0.0);
}

TEST_F(Vit, ForwardShapesAndHead) {
  for (bool shared : {false, true}) {
    VisionTransformer vit(tiny(shared));
    auto x = torch::randn({2, 3, 32, 32});
    EXPECT_EQ(vit->forward_features(x).sizes(), torch::IntArrayRef({2, 17, 32}));
    EXPECT_EQ(vit->forward(x).sizes(), torch::IntArrayRef({2, 3}));
    EXPECT_EQ(vit->forward_head(vit->forward_features(x), true).sizes(), torch::IntArrayRef({2, 32}));
    EXPECT_EQ(vit->forward_patch_tokens(x).sizes(), torch::IntArrayRef({2, 16, 32}));
    std::vector<torch::Tensor> inter;
    vit->forward_intermediates(x, {0, 1}, inter);
    ASSERT_EQ(inter.size(), 2u);
    EXPECT_THROW(vit->forward_intermediates(x, {2}, inter), c10::Error);
    vit->reset_classifier(7);
    EXPECT_EQ(vit->forward(x).sizes(), torch::IntArrayRef({2, 7}));
    vit->reset_classifier(0);
    EXPECT_EQ(vit->forward(x).sizes(), torch::IntArrayRef({2, 32}));
    EXPECT_FALSE(state_dict(*vit).count("head.weight"));
  }
}

TEST_F(Vit, EveryParameterGetsAGradientAndNothingIsNaN) {
  auto c = tiny(true);
  c.use_rel_pos_bias = true;  // both kinds of bias at once
  VisionTransformer vit(c);
  vit->train();
  auto out = vit->forward(torch::randn({2, 3, 32, 32}));
  out.pow(2).sum().backward();
  for (const auto& p : vit->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(p.value().grad().isfinite().all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
}

TEST_F(Vit, SaveLoadRoundTripAndDeterministicEval) {
  auto c = tiny(true);
  c.drop_path_rate = 0.1;
  VisionTransformer a(c), b(c);
  test::TempDir tmp("roundtrip");
  save_weights(*a, tmp / "vit.safetensors");
  load_weights(*b, tmp / "vit.safetensors");
  a->eval();
  b->eval();
  auto x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
  EXPECT_TRUE(torch::equal(a->forward(x), a->forward(x)));
  // In training, drop path makes two passes differ.
  a->train();
  EXPECT_FALSE(torch::equal(a->forward(x), a->forward(x)));
}

TEST_F(Vit, BadInputErrorsNameTheExpectation) {
  VisionTransformer vit(tiny());
  auto msg = [&](const torch::Tensor& x) {
    try {
      vit->forward(x);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg(torch::randn({1, 3, 36, 36})).find("not divisible by patch 8"), std::string::npos);
  EXPECT_NE(msg(torch::randn({1, 4, 32, 32})).find("expected 3 channels, got 4"), std::string::npos);
  EXPECT_NE(msg(torch::randn({3, 32, 32})).find("rank 3"), std::string::npos);
  auto c = tiny();
  c.img_size = 30;
  try {
    VisionTransformer bad(c);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.img_size = 30: not divisible by patch_size 8"), std::string::npos);
  }
}

TEST_F(Vit, NoWeightDecayAndLayerIds) {
  VisionTransformer vit(tiny());
  EXPECT_EQ(vit->no_weight_decay(), (std::set<std::string>{"cls_token", "pos_embed"}));
  EXPECT_EQ(vit->layer_id_for("cls_token"), 0);
  EXPECT_EQ(vit->layer_id_for("patch_embed.proj.weight"), 0);
  EXPECT_EQ(vit->layer_id_for("blocks.0.attn.qkv.weight"), 1);
  EXPECT_EQ(vit->layer_id_for("blocks.1.gamma_1"), 2);
  EXPECT_EQ(vit->layer_id_for("rel_pos_bias.relative_position_bias_table"), 3);
  EXPECT_EQ(vit->layer_id_for("head.weight"), 3);
}

// ---- config from YAML ----

/// Writes `text` to a new file in a folder removed at exit.
std::filesystem::path write_yaml(const std::string& text) {
  static const test::TempDir dir("cfg");
  static int n = 0;
  auto p = dir / ("model_" + std::to_string(n++) + ".yaml");
  std::ofstream(p) << text;
  return p;
}

ViTConfig load_model(const std::filesystem::path& p, const std::vector<std::string>& overrides = {}) {
  auto root = load_yaml_file(p.string());
  for (const auto& o : overrides) apply_yaml_override(root, o);
  YamlMap top(root, p.string(), "");
  auto m = top.child("model");
  auto c = vit_config_from_yaml(m);
  top.finish();
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(ViTConfigYaml, PresetPlusOverrides) {
  auto p = write_yaml("model:\n  preset: vit_base_patch16_224\n  depth: 6\n  act: quick_gelu\n");
  auto c = load_model(p);
  EXPECT_EQ(c.embed_dim, 768);
  EXPECT_EQ(c.depth, 6);
  EXPECT_EQ(c.act, Activation::kQuickGELU);
  auto c2 = load_model(p, {"model.num_heads=6", "model.mlp_ratio=2.5"});
  EXPECT_EQ(c2.num_heads, 6);
  EXPECT_EQ(c2.mlp_ratio, 2.5);
}

TEST(ViTConfigYaml, SpelledOutEqualsPreset) {
  auto p = write_yaml("model:\n" + [] {
    std::string s;
    std::istringstream in(vit_preset("beitv2_base_patch16_224").to_yaml());
    for (std::string line; std::getline(in, line);) s += "  " + line + "\n";
    return s;
  }());
  EXPECT_EQ(load_model(p).to_yaml(), vit_preset("beitv2_base_patch16_224").to_yaml());
}

TEST(ViTConfigYaml, ErrorsNameFileLineAndKey) {
  auto p = write_yaml("model:\n  preset: vit_test_tiny\n  depht: 3\n");
  auto e = error_of([&] { load_model(p); });
  EXPECT_NE(e.find(p.string() + ":3: unknown key 'model.depht'"), std::string::npos) << e;

  p = write_yaml("model:\n  depth: twelve\n");
  e = error_of([&] { load_model(p); });
  EXPECT_NE(e.find(":2: model.depth: expected an integer, got 'twelve'"), std::string::npos) << e;

  p = write_yaml("model:\n  preset: nope\n");
  e = error_of([&] { load_model(p); });
  EXPECT_NE(e.find("model.preset: unknown model 'nope'"), std::string::npos) << e;

  p = write_yaml("model:\n  img_size: 225\n");
  e = error_of([&] { load_model(p); });
  EXPECT_NE(e.find("model.img_size = 225: not divisible by patch_size 16"), std::string::npos) << e;

  p = write_yaml("modle:\n  depth: 2\n");
  e = error_of([&] { load_model(p); });
  EXPECT_NE(e.find(":1: unknown key 'modle'"), std::string::npos) << e;

  e = error_of([&] { load_model("/nonexistent/x.yaml"); });
  EXPECT_NE(e.find("/nonexistent/x.yaml: cannot open"), std::string::npos) << e;

  p = write_yaml("model: [1, 2\n");
  e = error_of([&] { load_model(p); });
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos) << e;

  p = write_yaml("model:\n  act: relu\n");
  e = error_of([&] { load_model(p); });
  EXPECT_NE(e.find("model.act: unknown activation 'relu'"), std::string::npos) << e;
}

}  // namespace
}  // namespace beitv2
