// Core helpers a user meets through their messages: strict YAML (repeated keys, directories), whole-file reads,
// and configs that come from weights files (empty, broken, absurd).
#include <fstream>

#include "beitv2/beitv2.h"
#include "common.h"

namespace beitv2 {
namespace {

std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(YamlKeys, ARepeatedKeyNamesBothLinesAndThePath) {
  test::TempDir tmp("yaml_dup");
  const auto p = tmp / "x.yaml";
  // yaml-cpp keeps both pairs and node["lr"] reads the first: silently 1e-3 before the check.
  std::ofstream(p) << "optim:\n  lr: 1.0e-3\n  weight_decay: 0.05\n  lr: 5.0e-4\n";
  EXPECT_EQ(config_error([&] { load_yaml_file(p.string()); }),
            p.string() + ":4: duplicate key 'optim.lr' (first at line 2)");
}

TEST(YamlKeys, ASecondSectionIsADuplicateToo) {
  test::TempDir tmp("yaml_dup2");
  const auto p = tmp / "x.yaml";
  std::ofstream(p) << "data:\n  batch_size: 8\nmodel:\n  preset: vit_test_tiny\n\ndata:\n  batch_size: 64\n";
  EXPECT_EQ(config_error([&] { load_yaml_file(p.string()); }),
            p.string() + ":6: duplicate key 'data' (first at line 1)");
  // Inside lists of mappings and in flow style as well.
  std::ofstream(p) << "runs:\n  - {a: 1, b: 2, a: 3}\n";
  EXPECT_EQ(config_error([&] { load_yaml_file(p.string()); }),
            p.string() + ":2: duplicate key 'runs[0].a' (first at line 2)");
  // The same key in different mappings is fine.
  std::ofstream(p) << "encoder:\n  depth: 2\ndecoder:\n  depth: 3\n";
  EXPECT_EQ(load_yaml_file(p.string())["decoder"]["depth"].as<int>(), 3);
}

TEST(YamlKeys, TextAndOverridesAreCheckedToo) {
  EXPECT_EQ(config_error([] { load_yaml_text("a: 1\nb: 2\na: 1\n", "w.safetensors (stored config)"); }),
            "w.safetensors (stored config):3: duplicate key 'a' (first at line 1)");
  YAML::Node root = load_yaml_text("optim:\n  lr: 1\n", "t");
  const auto e = config_error([&] { apply_yaml_override(root, "optim={lr: 1, lr: 2}"); });
  EXPECT_NE(e.find("--set 'optim={lr: 1, lr: 2}'"), std::string::npos) << e;
  EXPECT_NE(e.find("duplicate key 'lr'"), std::string::npos) << e;
}

TEST(Files, ADirectoryWhereAFileIsExpectedSaysSo) {
  test::TempDir tmp("dir_as_file");
  // Before: "basic_filebuf::underflow error reading the file: Is a directory" from yaml-cpp, naming nothing.
  EXPECT_EQ(config_error([&] { load_yaml_file(tmp.path().string()); }), tmp.path().string() + ": is a directory");
  try {
    read_file(tmp.path());
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_EQ(std::string(e.what()), tmp.path().string() + ": is a directory");
  }
}

Metadata tokenizer_meta(const std::string& config) { return {{"format", "beitv2-tokenizer"}, {"config", config}}; }

TEST(StoredConfigs, EmptyBrokenOrRepeatedConfigsInWeightsAreClearErrors) {
  // An empty config would otherwise read as the default tokenizer and fail later with dozens of shape lines.
  const auto empty = config_error([] { tokenizer_config("w.safetensors", tokenizer_meta("")); });
  EXPECT_NE(empty.find("w.safetensors (stored config): the stored tokenizer config is empty"), std::string::npos)
      << empty;
  const auto broken = config_error([] { tokenizer_config("w.safetensors", tokenizer_meta("encoder: [1, 2\n")); });
  EXPECT_NE(broken.find("w.safetensors (stored config):"), std::string::npos) << broken;
  EXPECT_NE(broken.find("YAML syntax error"), std::string::npos) << broken;
  const auto twice =
      config_error([] { tokenizer_config("w.safetensors", tokenizer_meta("preset: vqkd_test_tiny\nn_code: 8\nn_code: 16\n")); });
  EXPECT_EQ(twice, "w.safetensors (stored config):3: duplicate key 'n_code' (first at line 2)");
}

TEST(StoredConfigs, AbsurdSizesAreRefusedBeforeAnyAllocation) {
  // A flipped byte in a stored config must not ask for terabytes (an embed_dim of 10^9 is a 4 EB qkv weight).
  for (const char* field : {"img_size: 1048576\n    patch_size: 16", "embed_dim: 1000000000", "depth: 100000",
                            "num_heads: 4096\n    embed_dim: 8192"}) {
    const std::string yaml = std::string("preset: vqkd_test_tiny\nencoder:\n    ") + field + "\n";
    const auto e = config_error([&] { tokenizer_config("w.safetensors", tokenizer_meta(yaml)); });
    EXPECT_NE(e.find("w.safetensors (stored config): model."), std::string::npos) << field << ": " << e;
    EXPECT_NE(e.find("implausibly large"), std::string::npos) << field << ": " << e;
  }
  const auto e = config_error(
      [] { tokenizer_config("w.safetensors", tokenizer_meta("preset: vqkd_test_tiny\nn_code: 1000000000\n")); });
  EXPECT_NE(e.find("model.n_code = 1000000000: implausibly large"), std::string::npos) << e;
  // Real models stay inside the bounds.
  EXPECT_NO_THROW(vit_preset("vit_large_patch16_224").validate());
  EXPECT_NO_THROW(vqkd_preset("vqkd_encoder_base_decoder_3x768x12_clip").validate());
}

TEST(YamlOverrides, AWrongOverrideIsNamedAsSuchNotAsALineOfTheFile) {
  test::TempDir dir("override");
  std::ofstream(dir / "c.yaml") << "train:\n  steps: 4\n";
  for (const std::string& set : {std::string("train.steps=abc"), std::string("train.epochs_typo=3")}) {
    YAML::Node root = load_yaml_file((dir / "c.yaml").string());
    apply_yaml_override(root, set);
    YamlMap top(root, (dir / "c.yaml").string(), "");
    auto train = top.child("train");
    int64_t steps = 0;
    try {
      train.get("steps", steps);
      train.finish();
      FAIL() << "no error for " << set;
    } catch (const ConfigError& e) {
      const std::string key = set.substr(0, set.find('='));
      EXPECT_NE(std::string(e.what()).find("c.yaml: --set " + key), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace beitv2
