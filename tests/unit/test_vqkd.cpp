// NormEMAVectorQuantizer and VQKD: analytic cases, properties, official names, behaviour.
#include <ATen/autocast_mode.h>
#include <sys/wait.h>

#include <fstream>

#include "beitv2/beitv2.h"
#include "common.h"

namespace beitv2 {
namespace {

using test::close;
class Vq : public test::Seeded {};

torch::Tensor unit(const torch::Tensor& t) {
  return torch::nn::functional::normalize(t, torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

// A quantizer over `codes` (n, d), already initialised.
nn::NormEMAVectorQuantizer with_codebook(const torch::Tensor& codes, int64_t restart_steps = 0) {
  nn::NormEMAVectorQuantizer q(nn::NormEMAVectorQuantizerOptions(codes.size(0), codes.size(1))
                                   .kmeans_init(true)
                                   .dead_code_restart_steps(restart_steps));
  torch::NoGradGuard ng;
  q->embedding->weight.copy_(unit(codes));
  q->embedding->initted.fill_(1.0);
  return q;
}

// (N, d) vectors -> the (1, d, 1, N) map layout the quantizer takes.
torch::Tensor as_map(const torch::Tensor& v) { return v.t().reshape({1, v.size(1), 1, v.size(0)}); }

TEST_F(Vq, NearestCodeByCosineOnAHandMadeCodebook) {
  auto q = with_codebook(torch::eye(3));
  q->eval();
  // Scale does not matter (inputs are normalised); the largest cosine wins.
  auto z = torch::tensor({{5.0f, 1.0f, 0.0f}, {0.1f, 0.2f, 3.0f}, {-1.0f, 2.0f, 0.5f}, {0.3f, 0.0f, 0.2f}});
  auto out = q(as_map(z));
  EXPECT_TRUE(torch::equal(out.indices, torch::tensor({0, 2, 1, 0}, torch::kLong)));
  // Output values are the codes (straight-through forward), laid out back as (B, C, H, W).
  EXPECT_TRUE(close(out.z_q.reshape({3, 4}).t(), torch::eye(3).index_select(0, out.indices), 1e-6, 0));
  // Commitment loss = mean over all elements of (code - unit(z))².
  auto expect = (torch::eye(3).index_select(0, out.indices) - unit(z)).pow(2).mean();
  EXPECT_NEAR(out.loss.item<double>(), expect.item<double>(), 1e-7);
}

TEST_F(Vq, EvalLeavesTheCodebookAndCountsUsage) {
  auto q = with_codebook(torch::randn({16, 4}));
  q->eval();
  auto before = q->embedding->weight.clone();
  auto out = q(torch::randn({2, 4, 3, 3}));
  EXPECT_TRUE(torch::equal(q->embedding->weight, before));
  auto counts = torch::bincount(out.indices, {}, 16).to(torch::kFloat);
  EXPECT_TRUE(close(q->cluster_size, 0.01 * counts, 1e-7, 0));
  EXPECT_EQ(q->unused_codes(), counts.eq(0).sum().item<int64_t>());
  q->reset_usage();
  EXPECT_EQ(q->unused_codes(), 16);
}

TEST_F(Vq, TrainingEmaUpdateByHand) {
  auto codes = unit(torch::randn({8, 4}));
  auto q = with_codebook(codes);
  q->train();
  auto z = torch::randn({1, 4, 2, 5});
  auto out = q(z);
  // By hand: per-code mean of the normalised inputs, normalised; unused codes keep their vector.
  auto flat = unit(z.permute({0, 2, 3, 1}).reshape({-1, 4}));
  auto expect = codes.clone();
  for (int64_t c = 0; c < 8; ++c) {
    auto mask = out.indices.eq(c);
    if (!mask.any().item<bool>()) continue;
    auto m = unit(flat.index({mask}).sum(0));
    expect[c] = unit(0.99 * codes[c] + 0.01 * m);
  }
  EXPECT_TRUE(close(q->embedding->weight, expect, 1e-6, 0));
  // Rows stay unit norm; lookups used the codebook before the update.
  EXPECT_TRUE(close(q->embedding->weight.norm(2, 1), torch::ones({8}), 1e-6, 0));
  EXPECT_TRUE(close(out.z_q.permute({0, 2, 3, 1}).reshape({-1, 4}), codes.index_select(0, out.indices), 1e-6, 0));
}

TEST_F(Vq, KMeansInitOnFirstForward) {
  nn::NormEMAVectorQuantizer q(nn::NormEMAVectorQuantizerOptions(8, 4));
  EXPECT_EQ(q->embedding->initted.item<float>(), 0.0f);
  EXPECT_EQ(q->embedding->weight.abs().sum().item<float>(), 0.0f);
  q->train();
  auto z = torch::randn({4, 4, 4, 4});
  q(z);
  EXPECT_EQ(q->embedding->initted.item<float>(), 1.0f);
  EXPECT_TRUE(close(q->embedding->weight.norm(2, 1), torch::ones({8}), 1e-5, 0));
  EXPECT_EQ(q->embedding->cluster_size.sum().item<float>(), 64.0f);  // k-means counts cover every vector
  // A second forward does not re-run k-means.
  auto w = q->embedding->cluster_size.clone();
  q(z);
  EXPECT_TRUE(torch::equal(q->embedding->cluster_size, w));
}

TEST_F(Vq, KMeansAnalytic) {
  // Two tight clusters around e0 and e1 on the circle; any picks converge to their centres.
  auto a = unit(torch::tensor({{1.0f, 0.05f}, {1.0f, -0.05f}, {1.0f, 0.0f}}));
  auto b = unit(torch::tensor({{0.05f, 1.0f}, {-0.05f, 1.0f}}));
  auto samples = torch::cat({a, b});
  auto [means, counts] = nn::kmeans_cosine(samples, 2, 10, torch::tensor({0, 3}, torch::kLong));
  EXPECT_TRUE(close(means, torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}}), 1e-6, 0));
  EXPECT_TRUE(torch::equal(counts, torch::tensor({3, 2}, torch::kLong)));
  // An empty cluster keeps its previous mean: with duplicate picks, ties go to the first, the second starves.
  auto [m2, c2] = nn::kmeans_cosine(samples, 3, 1, torch::tensor({0, 0, 3}, torch::kLong));
  EXPECT_EQ(c2[1].item<int64_t>(), 0);
  EXPECT_TRUE(close(m2[1], samples[0], 1e-7, 0));
}

TEST_F(Vq, StraightThroughAndCommitmentGradients) {
  auto q = with_codebook(torch::randn({32, 6}));
  q->eval();
  auto z_in = torch::randn({2, 6, 2, 2}, torch::dtype(torch::kDouble)).requires_grad_(true);
  auto w = torch::randn({2, 6, 2, 2});
  auto out = q(z_in);
  // Straight-through: d sum(w * out) / d z_in equals the gradient through l2norm alone.
  auto g_st = torch::autograd::grad({(w * out.z_q).sum()}, {z_in})[0];
  auto zz = z_in.detach().clone().requires_grad_(true);
  auto normed = unit(zz.to(torch::kFloat).permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
  auto g_ref = torch::autograd::grad({(w * normed).sum()}, {zz})[0];
  EXPECT_TRUE(close(g_st, g_ref, 1e-6, 1e-5));
  // Commitment loss: autograd vs central finite differences (ids do not change for small steps).
  auto g = torch::autograd::grad({q(z_in).loss}, {z_in})[0];
  const double h = 1e-3;
  auto flat = z_in.detach().flatten();
  for (int64_t i = 0; i < flat.numel(); i += 5) {
    auto zp = flat.clone(), zm = flat.clone();
    zp[i] += h;
    zm[i] -= h;
    const double fp = q(zp.view(z_in.sizes())).loss.item<double>(), fm = q(zm.view(z_in.sizes())).loss.item<double>();
    EXPECT_NEAR((fp - fm) / (2 * h), g.flatten()[i].item<double>(), 2e-4) << i;
  }
}

TEST_F(Vq, DistancesStayFp32UnderAutocast) {
  auto q = with_codebook(torch::randn({64, 8}));
  q->eval();
  auto z = torch::randn({2, 8, 4, 4});
  auto ref = q(z).indices;
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  auto out = q(z);
  const bool still_on = at::autocast::is_autocast_enabled(at::kCPU);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  EXPECT_TRUE(still_on) << "the fp32 island must restore the caller's autocast state";
  EXPECT_EQ(out.z_q.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(out.indices, ref));
}

TEST_F(Vq, CollectivesSumStatistics) {
  // Two identical "ranks": every all-reduce doubles. Means are unchanged, usage doubles.
  auto codes = torch::randn({8, 4});
  auto single = with_codebook(codes), twin = with_codebook(codes);
  twin->collectives.all_reduce_sum = [](torch::Tensor& t) { t.mul_(2); };
  single->train();
  twin->train();
  auto z = torch::randn({1, 4, 3, 3});
  single(z);
  twin(z);
  EXPECT_TRUE(close(twin->embedding->weight, single->embedding->weight, 1e-6, 0));
  EXPECT_TRUE(close(twin->cluster_size, 2 * single->cluster_size, 1e-7, 0));
}

TEST_F(Vq, DeadCodeRestartIsOffByDefaultAndRevivesWhenOn) {
  // Codes 1..7 point away from every input, so only code 0 ever wins.
  auto codes = torch::zeros({8, 3});
  codes.index_put_({0, 0}, 1.0);
  codes.index_put_({torch::indexing::Slice(1), 1}, -1.0);
  codes.index_put_({torch::indexing::Slice(1), 2}, torch::arange(1, 8).to(torch::kFloat) * 0.01);
  auto z = torch::rand({1, 3, 2, 4}) + torch::tensor({2.0f, 0.5f, 0.0f}).view({1, 3, 1, 1});
  for (int64_t steps : {0, 2}) {
    auto q = with_codebook(codes, steps);
    q->train();
    auto before = q->embedding->weight.clone();
    q(z);
    q(z);
    const auto changed = (q->embedding->weight.slice(0, 1) - before.slice(0, 1)).abs().sum(1).gt(1e-6);
    if (steps == 0) {
      EXPECT_EQ(q->restarted_codes(), 0);
      EXPECT_FALSE(changed.any().item<bool>());
    } else {
      EXPECT_EQ(q->restarted_codes(), 7);
      EXPECT_TRUE(changed.all().item<bool>());
      auto out = q(z);  // revived codes now sit on input vectors and win some of them
      EXPECT_GT(std::get<0>(at::_unique(out.indices)).numel(), 1);
    }
  }
}

// ---- VQKD ----

class Vqkd : public test::Seeded {};

TEST_F(Vqkd, OfficialTokenizersHaveTheOfficialNamesAndShapes) {
  // docs/reference.md §7, written out.
  auto expected = [](int64_t dec_depth, int64_t out_dim) {
    std::map<std::string, std::vector<int64_t>> m;
    auto tower = [&m](const std::string& p, int64_t depth, int64_t in_chans, int64_t patch) {
      m[p + "cls_token"] = {1, 1, 768};
      m[p + "pos_embed"] = {1, 197, 768};
      m[p + "patch_embed.proj.weight"] = {768, in_chans, patch, patch};
      m[p + "patch_embed.proj.bias"] = {768};
      for (int64_t i = 0; i < depth; ++i) {
        const std::string b = p + "blocks." + std::to_string(i) + ".";
        for (const char* n : {"norm1.weight", "norm1.bias", "attn.q_bias", "attn.v_bias", "attn.proj.bias",
                              "norm2.weight", "norm2.bias", "mlp.fc2.bias"}) {
          m[b + n] = {768};
        }
        m[b + "attn.qkv.weight"] = {2304, 768};
        m[b + "attn.proj.weight"] = {768, 768};
        m[b + "mlp.fc1.weight"] = {3072, 768};
        m[b + "mlp.fc1.bias"] = {3072};
        m[b + "mlp.fc2.weight"] = {768, 3072};
      }
      m[p + "fc_norm.weight"] = {768};
      m[p + "fc_norm.bias"] = {768};
    };
    tower("encoder.", 12, 3, 16);
    tower("decoder.", dec_depth, 32, 1);
    m["quantize.embedding.weight"] = {8192, 32};
    m["quantize.embedding.cluster_size"] = {8192};
    m["quantize.embedding.embed_avg"] = {8192, 32};
    m["quantize.embedding.initted"] = {1};
    m["quantize.cluster_size"] = {8192};
    m["encode_task_layer.0.weight"] = {768, 768};
    m["encode_task_layer.0.bias"] = {768};
    m["encode_task_layer.2.weight"] = {32, 768};
    m["encode_task_layer.2.bias"] = {32};
    m["decode_task_layer.0.weight"] = {768, 768};
    m["decode_task_layer.0.bias"] = {768};
    m["decode_task_layer.2.weight"] = {out_dim, 768};
    m["decode_task_layer.2.bias"] = {out_dim};
    return m;
  };
  const std::vector<std::tuple<std::string, int64_t, int64_t>> official = {
      {"vqkd_encoder_base_decoder_3x768x12_clip", 3, 512},
      {"vqkd_encoder_base_decoder_1x768x12_clip", 1, 512},
      {"vqkd_encoder_base_decoder_1x768x12_dino", 1, 768}};
  for (const auto& [name, depth, dim] : official) {
    VQKD vq(vqkd_preset(name));
    std::map<std::string, std::vector<int64_t>> got;
    for (const auto& [k, v] : state_dict(*vq)) got[k] = v.sizes().vec();
    EXPECT_EQ(got, expected(depth, dim)) << name;
  }
}

TEST_F(Vqkd, TokensFromUint8AndUnitFloatAgree) {
  VQKD vq(vqkd_preset("vqkd_test_tiny"));
  vq->eval();
  auto u8 = torch::randint(0, 256, {3, 3, 32, 32}, torch::kUInt8);
  auto a = vq->get_tokens(u8);  // first call runs k-means on these vectors
  auto b = vq->get_tokens(u8.to(torch::kFloat) / 255.0);
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({3, 16}));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(close(vq->pre_process(u8), u8.to(torch::kFloat) / 127.5 - 1, 1e-6, 0));
}

TEST_F(Vqkd, BadTargetsAndImagesAreNamed) {
  VQKD vq(vqkd_preset("vqkd_test_tiny"));
  auto x = torch::rand({2, 3, 32, 32});
  EXPECT_THROW(vq->forward(x, torch::randn({2, 16, 15})), c10::Error);
  EXPECT_THROW(vq->forward(x, torch::randn({3, 16, 16})), c10::Error);
  EXPECT_THROW(vq->get_tokens(torch::rand({2, 1, 32, 32})), c10::Error);
  EXPECT_THROW(vqkd_preset("vqkd_huge"), std::invalid_argument);
}

TEST_F(Vqkd, LearnsToReconstructAFixedTarget) {
  // A handful of Adam steps on one batch lowers the reconstruction loss clearly (behavioural check).
  VQKD vq(vqkd_preset("vqkd_test_tiny"));
  vq->train();
  auto x = torch::rand({8, 3, 32, 32});
  auto t = torch::randn({8, 16, 16});
  std::vector<torch::Tensor> params;
  for (auto& p : vq->parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    auto out = vq->forward(x, t);
    opt.zero_grad();
    out.loss.backward();
    opt.step();
    (step == 0 ? first : last) = out.rec_loss.item<double>();
  }
  EXPECT_LT(last, 0.7 * first) << "rec loss " << first << " -> " << last;
}

TEST(VqkdYaml, PresetWithTowerOverridesAndDerivedDecoder) {
  test::TempDir tmp("vqkd_yaml");
  const auto p = tmp / "model.yaml";
  std::ofstream(p) << "model:\n  preset: vqkd_test_tiny\n  code_dim: 4\n  encoder:\n    depth: 3\n  decoder:\n"
                      "    preset: vit_test_tiny\n    depth: 2\n";
  auto root = load_yaml_file(p.string());
  YamlMap top(root, p.string(), "");
  auto m = top.child("model");
  auto c = vqkd_config_from_yaml(m);
  EXPECT_EQ(c.encoder.depth, 3);
  EXPECT_EQ(c.decoder.depth, 2);
  EXPECT_EQ(c.decoder.in_chans, 4);  // derived from code_dim
  EXPECT_EQ(c.decoder.img_size, 4);  // the encoder grid
  EXPECT_EQ(c.decoder.patch_size, 1);
  std::ofstream(p) << "model:\n  preset: vqkd_test_tiny\n  encoder:\n    num_classes: 3\n";
  auto root2 = load_yaml_file(p.string());
  YamlMap top2(root2, p.string(), "");
  auto m2 = top2.child("model");
  try {
    vqkd_config_from_yaml(m2);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("must be 0"), std::string::npos) << e.what();
  }
}

TEST(TokenizeImages, AnotherTokenizerThanTheStoredOneSaysSoBeforeAShortSample) {
  test::TempDir tmp("tokenize");
  VqkdConfig wide = vqkd_preset("vqkd_test_tiny");
  wide.encoder.embed_dim = 48;  // every encoder tensor differs from vqkd_test_tiny's
  wide.derive();
  VQKD vq(wide);
  const auto weights = tmp / "tok.safetensors";
  save_weights(*vq, weights, {{"format", "beitv2-tokenizer"}, {"config", wide.to_yaml()}});
  std::ofstream(tmp / "list.txt") << test::photos_dir().string() << "/baboon.jpg\n"
                                  << test::photos_dir().string() << "/box.png\n";
  const auto run = [&](const std::string& extra) {
    const std::string cmd = std::string(BEITV2_BIN_DIR) + "/tokenize-images --weights " + weights.string() +
                            " --list " + (tmp / "list.txt").string() + " --out " + (tmp / "t.jsonl").string() +
                            " --threads 1 " + extra + " > " + (tmp / "out.txt").string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    return std::make_pair(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_file(tmp / "out.txt"));
  };
  const auto [rc, out] = run("--tokenizer vqkd_test_tiny");
  EXPECT_EQ(rc, 1) << out;
  // Before: "cannot load ...:" and one line per mismatched tensor (dozens for a real model).
  EXPECT_EQ(out.rfind("tokenize-images: error: " + weights.string() + " holds its own tokenizer config", 0), 0u)
      << out;
  EXPECT_NE(out.find("embed_dim 48"), std::string::npos) << out;
  EXPECT_NE(out.find("leave --tokenizer out to use the stored config"), std::string::npos) << out;
  EXPECT_NE(out.find("more"), std::string::npos) << out;
  EXPECT_LE(std::count(out.begin(), out.end(), '\n'), 7) << out;
  // Without --tokenizer the stored config is used; a negative --resize is refused.
  const auto [ok_rc, ok_out] = run("");
  EXPECT_EQ(ok_rc, 0) << ok_out;
  EXPECT_NE(ok_out.find("tokenised 2 images"), std::string::npos) << ok_out;
  EXPECT_NE(run("--resize -5").first, 0);
}

}  // namespace
}  // namespace beitv2
