// Building blocks: analytic cases, properties, fused vs reference paths.
#include "beitv2/nn.h"
#include "common.h"

namespace beitv2::nn {
namespace {

using test::close;
class Nn : public test::Seeded {};

TEST_F(Nn, RelativePositionIndexMatchesSpecFormula) {
  // docs/reference.md §0 for a 14x14 window, checked element by element against the written-out rule.
  const int64_t W = 14, N = W * W + 1;
  auto index = relative_position_index(W, W);
  ASSERT_EQ(index.sizes(), torch::IntArrayRef({N, N}));
  auto acc = index.accessor<int64_t, 2>();
  EXPECT_EQ(acc[0][0], 731);
  for (int64_t p = 0; p < W * W; ++p) {
    EXPECT_EQ(acc[0][p + 1], 729);
    EXPECT_EQ(acc[p + 1][0], 730);
    for (int64_t q = 0; q < W * W; ++q) {
      const int64_t hi = p / W, wi = p % W, hj = q / W, wj = q % W;
      ASSERT_EQ(acc[p + 1][q + 1], (hi - hj + 13) * 27 + (wi - wj + 13)) << p << "," << q;
    }
  }
  EXPECT_EQ(num_relative_distance(W, W), 732);
  EXPECT_EQ(index.max().item<int64_t>(), 731);
}

TEST_F(Nn, RelativePositionIndexNonSquare) {
  auto index = relative_position_index(2, 3);  // table rows (3*5)+3 = 18
  EXPECT_EQ(index.size(0), 7);
  // patch (0,0) -> patch (1,2): dh = -1 + 1 = 0, dw = -2 + 2 = 0 -> 0; reverse: dh 2, dw 4 -> 2*5+4 = 14
  EXPECT_EQ(index[1][6].item<int64_t>(), 0);
  EXPECT_EQ(index[6][1].item<int64_t>(), 14);
  EXPECT_EQ(index[0][0].item<int64_t>(), 17);
}

TEST_F(Nn, GatheredBiasPicksTableRows) {
  auto table = torch::randn({num_relative_distance(3, 3), 4});
  auto index = relative_position_index(3, 3);
  auto bias = gather_relative_position_bias(table, index);  // H, N, N
  ASSERT_EQ(bias.sizes(), torch::IntArrayRef({4, 10, 10}));
  for (int64_t h = 0; h < 4; ++h) {
    for (int64_t q = 0; q < 10; q += 3) {
      for (int64_t k = 0; k < 10; k += 2) {
        EXPECT_EQ(bias[h][q][k].item<float>(), table[index[q][k].item<int64_t>()][h].item<float>());
      }
    }
  }
}

TEST_F(Nn, ReferenceAttentionAnalytic) {
  // Two keys, one query: logits q·k * scale (+ bias) -> softmax weights -> weighted values, by hand.
  auto q = torch::tensor({1.0f, 0.0f}).view({1, 1, 1, 2});
  auto k = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({1, 1, 2, 2});
  auto v = torch::tensor({10.0f, 0.0f, 0.0f, 20.0f}).view({1, 1, 2, 2});
  auto bias = torch::tensor({0.0f, 0.5f}).view({1, 1, 2});
  const double s = 1 / std::sqrt(2.0);
  const double w0 = std::exp(s) / (std::exp(s) + std::exp(0.5)), w1 = 1 - w0;
  auto out = attention_reference(q, k, v, bias);
  EXPECT_NEAR(out[0][0][0][0].item<double>(), 10 * w0, 1e-5);
  EXPECT_NEAR(out[0][0][0][1].item<double>(), 20 * w1, 1e-5);
}

TEST_F(Nn, SdpaMatchesReferenceForwardAndBackward) {
  for (bool with_bias : {false, true}) {
    auto q = torch::randn({2, 3, 17, 8}, torch::requires_grad());
    auto k = torch::randn({2, 3, 17, 8}, torch::requires_grad());
    auto v = torch::randn({2, 3, 17, 8}, torch::requires_grad());
    auto bias = with_bias ? torch::randn({3, 17, 17}, torch::requires_grad()) : torch::Tensor();
    auto gout = torch::randn({2, 3, 17, 8});
    auto grads = [&](const torch::Tensor& out) {
      std::vector<torch::Tensor> inputs{q, k, v};
      if (with_bias) inputs.push_back(bias);
      return torch::autograd::grad({out}, inputs, {gout});
    };
    auto ref = attention_reference(q, k, v, bias);
    auto fused = attention_sdpa(q, k, v, bias);
    EXPECT_TRUE(close(fused, ref, 1e-5, 1e-5)) << "forward, bias " << with_bias;
    auto gr = grads(ref), gf = grads(fused);
    for (size_t i = 0; i < gr.size(); ++i) EXPECT_TRUE(close(gf[i], gr[i], 1e-5, 1e-4)) << "grad " << i;
  }
}

TEST_F(Nn, AttentionModuleBackendsAgree) {
  Attention a(AttentionOptions(16, 2).window_h(3).window_w(3));
  torch::NoGradGuard ng;
  a->relative_position_bias_table.normal_();
  a->q_bias.normal_();
  a->v_bias.normal_();
  auto x = torch::randn({2, 10, 16});
  auto shared = torch::randn({2, 10, 10});
  auto fused = a(x, shared);
  a->options.backend(AttentionBackend::kReference);
  EXPECT_TRUE(close(fused, a(x, shared), 1e-5, 1e-5));
}

TEST_F(Nn, AttentionKeyHasNoBias) {
  // Changing v_bias by c shifts every output by proj(c) (softmax rows sum to 1); k never gets a bias, so the
  // official names are exactly q_bias and v_bias and nothing else.
  Attention a(AttentionOptions(8, 2));
  std::vector<std::string> names;
  for (const auto& p : a->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"q_bias", "v_bias", "qkv.weight", "proj.weight", "proj.bias"}));
  EXPECT_TRUE(a->named_buffers().is_empty());
}

TEST_F(Nn, AttentionRejectsBadShapes) {
  Attention a(AttentionOptions(16, 2).window_h(3).window_w(3));
  EXPECT_THROW(a(torch::randn({2, 10, 15})), c10::Error);  // width
  EXPECT_THROW(a(torch::randn({10, 16})), c10::Error);     // rank
  EXPECT_THROW(a(torch::randn({2, 11, 16})), c10::Error);  // tokens vs window
  EXPECT_THROW(Attention(AttentionOptions(15, 2)), c10::Error);
}

TEST_F(Nn, DropPathDropsWholeSamplesAndKeepsExpectation) {
  DropPath dp(0.25);
  auto x = torch::ones({4000, 3, 2});
  auto y = dp(x);
  // Each sample is either all zero or all 1/(1-p).
  auto per_sample = y.view({4000, -1});
  auto zero = (per_sample == 0).all(1), kept = (per_sample - 1 / 0.75).abs().lt(1e-6).all(1);
  EXPECT_TRUE((zero | kept).all().item<bool>());
  EXPECT_NEAR(zero.to(torch::kFloat).mean().item<double>(), 0.25, 0.03);  // ~4.5 sigma
  EXPECT_NEAR(y.mean().item<double>(), 1.0, 0.05);
  dp->eval();
  EXPECT_TRUE(torch::equal(dp(x), x));
  EXPECT_TRUE(torch::equal(DropPath(0.0)(x), x));
}

TEST_F(Nn, PatchEmbedShapesAndErrors) {
  PatchEmbed pe(PatchEmbedOptions(32, 8, 3, 24));
  auto y = pe(torch::randn({2, 3, 32, 32}));
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 16, 24}));
  // Token order is raster (row-major): token 1 is the patch at row 0, column 1.
  auto x = torch::zeros({1, 3, 32, 32});
  x.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(0, 8), torch::indexing::Slice(8, 16)}, 1.0);
  auto t = pe(x) - pe(torch::zeros({1, 3, 32, 32}));
  EXPECT_GT(t[0][1].abs().sum().item<double>(), 0);
  EXPECT_EQ(t[0][4].abs().sum().item<double>(), 0);

  auto message = [&](const torch::Tensor& in) {
    try {
      pe(in);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(torch::randn({2, 3, 33, 32})).find("not divisible by patch 8"), std::string::npos);
  EXPECT_NE(message(torch::randn({2, 1, 32, 32})).find("expected 3 channels, got 1"), std::string::npos);
  EXPECT_NE(message(torch::randn({3, 32, 32})).find("rank 3"), std::string::npos);
  EXPECT_NE(message(torch::randn({1, 3, 40, 40})).find("built for 32x32"), std::string::npos);
  EXPECT_THROW(PatchEmbed(PatchEmbedOptions(30, 8, 3, 24)), c10::Error);
}

TEST_F(Nn, MlpActivations) {
  Mlp gelu(MlpOptions(4, 8));
  Mlp quick(MlpOptions(4, 8).act(Activation::kQuickGELU));
  torch::NoGradGuard ng;
  quick->fc1->weight.copy_(gelu->fc1->weight);
  quick->fc1->bias.copy_(gelu->fc1->bias);
  quick->fc2->weight.copy_(gelu->fc2->weight);
  quick->fc2->bias.copy_(gelu->fc2->bias);
  auto x = torch::randn({5, 4});
  auto h = gelu->fc1(x);
  EXPECT_TRUE(close(gelu(x), gelu->fc2(0.5 * h * (1 + torch::erf(h / std::sqrt(2.0)))), 1e-6, 1e-6));
  EXPECT_TRUE(close(quick(x), gelu->fc2(h * torch::sigmoid(1.702 * h)), 1e-6, 1e-6));
  EXPECT_THROW(parse_activation("relu"), std::invalid_argument);
}

TEST_F(Nn, BlockLayerScaleAndNames) {
  Block plain(BlockOptions(16, 2));
  Block scaled(BlockOptions(16, 2).init_values(0.1).window_h(2).window_w(2));
  EXPECT_FALSE(plain->named_parameters().contains("gamma_1"));
  ASSERT_TRUE(scaled->named_parameters().contains("gamma_1"));
  EXPECT_TRUE(torch::allclose(scaled->gamma_2, torch::full({16}, 0.1)));
  EXPECT_TRUE(scaled->named_parameters().contains("attn.relative_position_bias_table"));
  EXPECT_TRUE(scaled->named_buffers().contains("attn.relative_position_index"));
  // With gammas zeroed the block is the identity.
  torch::NoGradGuard ng;
  scaled->gamma_1.zero_();
  scaled->gamma_2.zero_();
  auto x = torch::randn({2, 5, 16});
  EXPECT_TRUE(torch::equal(scaled(x), x));
}

TEST_F(Nn, TruncNormalStatistics) {
  auto t = torch::empty({200000});
  trunc_normal_(t, 0.02, -2.0, 2.0);  // effectively untruncated
  EXPECT_NEAR(t.std().item<double>(), 0.02, 0.0005);
  EXPECT_NEAR(t.mean().item<double>(), 0.0, 0.0005);
  trunc_normal_(t, 0.02, -0.02, 0.02);  // cut at one std: std of N(0,1) truncated to [-1,1] is 0.5379
  EXPECT_LE(t.abs().max().item<double>(), 0.02);
  EXPECT_NEAR(t.std().item<double>(), 0.02 * 0.5379, 0.0003);
}

}  // namespace
}  // namespace beitv2::nn
