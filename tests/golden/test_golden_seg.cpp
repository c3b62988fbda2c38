// Segmentation heads, loss and metrics against the plain-PyTorch rendering of the official modules
// (tests/reference/seg_ref.py, fixtures by tests/reference/gen_seg_golden.py) on the same weights and inputs.
//
// Tolerances (fp32): outputs and losses atol 1e-4 + rtol 1e-4, gradients atol 1e-5 + rtol 1e-3: the fixture's
// own reproducibility across thread counts is ~5e-6 on logits of std 2 (docs/segmentation.md §3), BatchNorm in
// train mode divides by batch statistics of 2 images, so rounding is amplified a little; a wrong weight, order
// or resize shows as > 1e-2. Metrics are exact (integer areas, float64 ratios).
#include <nlohmann/json.hpp>

#include <opencv2/core.hpp>

#include "beitv2/beitv2.h"
#include "beitv2/data/transforms.h"
#include "beitv2/models/segmentation.h"
#include "beitv2/train/finetune_init.h"
#include "common.h"

namespace beitv2 {
namespace {

constexpr const char* kRegen =
    "regenerate: ~/.cache/beitv2/ref-env/bin/python tests/reference/gen_seg_golden.py --out-dir tests/data/golden";

// The tensors of `file` under `prefix`, with the prefix removed.
TensorMap with_prefix(const TensorMap& all, const std::string& prefix) {
  TensorMap out;
  for (const auto& [k, v] : all) {
    if (k.rfind(prefix, 0) == 0) out.emplace(k.substr(prefix.size()), v);
  }
  return out;
}

struct Heads {
  SafetensorsFile file;
  SegHeadConfig config;
  nn::SegmentationHeads model{nullptr};
  std::vector<torch::Tensor> features;
  torch::Tensor label;

  Heads() : file(read_safetensors(test::data_dir() / "golden/seg_tiny_heads.safetensors")) {
    const auto j = nlohmann::json::parse(file.metadata.at("config"));
    config.embed_dim = j["embed_dim"];
    config.channels = j["channels"];
    config.num_classes = j["num_classes"];
    config.aux_channels = j["aux_channels"];
    config.pool_scales = j["pool_scales"].get<std::vector<int64_t>>();
    config.dropout = j["dropout_ratio"];
    config.aux_in_index = j["aux_in_index"];
    config.aux_loss_weight = j["aux_loss_weight"];
    model = nn::SegmentationHeads(config);
    load_state_dict(*model, with_prefix(file.tensors, "param."), {}, "seg_tiny_heads");
    for (int i = 0; i < 4; ++i) features.push_back(file.tensors.at("input.feature." + std::to_string(i)).clone());
    label = file.tensors.at("label").to(torch::kLong);
  }
  const torch::Tensor& at(const std::string& k) const { return file.tensors.at(k); }
};

TEST(GoldenSeg, HeadsInEvalModeMatchTheReference) {
  Heads h;
  h.model->eval();
  torch::NoGradGuard ng;
  const auto out = h.model->forward(h.features);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(test::close(out.levels[i], h.at("eval.level." + std::to_string(i)), 1e-4, 1e-4, kRegen)) << "level " << i;
  }
  EXPECT_TRUE(test::close(out.logits, h.at("eval.decode_logits"), 1e-4, 1e-4, kRegen));
  EXPECT_TRUE(test::close(out.aux_logits, h.at("eval.aux_logits"), 1e-4, 1e-4, kRegen));
}

TEST(GoldenSeg, TrainingForwardLossGradientsAndBatchNormBuffersMatchTheReference) {
  Heads h;
  h.model->train();
  h.model->decode_head->dropout_mask = h.at("train.dropout_mask.decode");
  h.model->auxiliary_head->dropout_mask = h.at("train.dropout_mask.aux");
  for (auto& f : h.features) f.requires_grad_(true);
  const auto out = h.model->forward(h.features);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(test::close(out.levels[i], h.at("train.level." + std::to_string(i)), 1e-4, 1e-4, kRegen)) << "level " << i;
  }
  EXPECT_TRUE(test::close(out.logits, h.at("train.decode_logits"), 1e-4, 1e-4, kRegen));
  EXPECT_TRUE(test::close(out.aux_logits, h.at("train.aux_logits"), 1e-4, 1e-4, kRegen));
  const auto decode = seg_cross_entropy(out.logits, h.label);
  const auto aux = seg_cross_entropy(out.aux_logits, h.label, 255, h.config.aux_loss_weight);
  EXPECT_TRUE(test::close(decode, h.at("train.loss.decode"), 1e-4, 1e-4, kRegen));
  EXPECT_TRUE(test::close(aux, h.at("train.loss.aux"), 1e-4, 1e-4, kRegen));
  (decode + aux).backward();
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(test::close(h.features[i].grad(), h.at("train.grad.input.feature." + std::to_string(i)), 1e-5, 1e-3,
                            kRegen)) << "feature " << i;
  }
  int64_t grads = 0, buffers = 0;
  for (const auto& p : h.model->named_parameters(true)) {
    EXPECT_TRUE(test::close(p.value().grad(), h.at("train.grad.param." + p.key()), 1e-5, 1e-3, kRegen)) << p.key();
    ++grads;
  }
  for (const auto& b : h.model->named_buffers(true)) {
    EXPECT_TRUE(test::close(b.value(), h.at("train.buffer." + b.key()), 1e-5, 1e-4, kRegen)) << b.key();
    ++buffers;
  }
  EXPECT_GT(grads, 40);
  EXPECT_GT(buffers, 40);
}

TEST(GoldenSeg, OfficialParameterNamesLoadStrictly) {
  Heads h;  // the constructor's load is strict: every name and shape matched; spot-check a few official ones
  const auto sd = state_dict(*h.model);
  for (const char* k : {"backbone.fpn1.0.weight", "backbone.fpn1.1.running_var", "backbone.fpn1.3.bias",
                        "backbone.fpn2.0.weight", "decode_head.psp_modules.3.1.conv.weight",
                        "decode_head.bottleneck.bn.weight", "decode_head.lateral_convs.2.conv.weight",
                        "decode_head.fpn_convs.0.bn.num_batches_tracked", "decode_head.fpn_bottleneck.conv.weight",
                        "decode_head.conv_seg.bias", "auxiliary_head.convs.0.conv.weight",
                        "auxiliary_head.conv_seg.weight"}) {
    EXPECT_TRUE(sd.count(k)) << k;
  }
}

// NaN where the reference has NaN, equal elsewhere.
::testing::AssertionResult same_with_nans(const torch::Tensor& a, const torch::Tensor& e) {
  auto x = a.to(torch::kDouble), y = e.to(torch::kDouble);
  if (!x.isnan().equal(y.isnan())) return ::testing::AssertionFailure() << "NaN pattern differs: " << x << " vs " << y;
  auto ok = x.isnan().logical_or(x.sub(y).abs().le(1e-12));
  return ok.all().item<bool>() ? ::testing::AssertionSuccess() : ::testing::AssertionFailure() << x << " vs " << y;
}

TEST(GoldenSeg, MetricsMatchMmsegsIntersectAndUnionWithIgnoreAndAbsentClasses) {
  const auto f = read_safetensors(test::data_dir() / "golden/seg_metrics.safetensors");
  const int64_t k = std::stoll(f.metadata.at("num_classes"));
  for (const std::string c : {"plain", "reduce_zero_label"}) {
    SegAreas total;
    for (int j = 0; j < 3; ++j) {
      const std::string i = std::to_string(j);
      const auto a = SegAreas::of(f.tensors.at(c + ".pred." + i), f.tensors.at(c + ".label." + i), k, 255,
                                  c == "reduce_zero_label");
      const std::string p = c + ".image." + i + ".area_";
      EXPECT_TRUE(a.intersect.equal(f.tensors.at(p + "intersect").to(torch::kDouble))) << c << " image " << j;
      EXPECT_TRUE(a.union_.equal(f.tensors.at(p + "union").to(torch::kDouble))) << c << " image " << j;
      EXPECT_TRUE(a.pred.equal(f.tensors.at(p + "pred_label").to(torch::kDouble))) << c << " image " << j;
      EXPECT_TRUE(a.label.equal(f.tensors.at(p + "label").to(torch::kDouble))) << c << " image " << j;
      total.add(a);
    }
    EXPECT_TRUE(total.union_.equal(f.tensors.at(c + ".area_union"))) << c;
    const auto m = SegMetrics::of(total);
    EXPECT_TRUE(same_with_nans(m.iou, f.tensors.at(c + ".IoU"))) << c;
    EXPECT_TRUE(same_with_nans(m.acc, f.tensors.at(c + ".Acc"))) << c;
    EXPECT_NEAR(m.aacc, f.tensors.at(c + ".aAcc").item<double>(), 1e-12) << c;
    EXPECT_NEAR(m.miou, f.tensors.at(c + ".mIoU").item<double>(), 1e-12) << c;
    EXPECT_NEAR(m.macc, f.tensors.at(c + ".mAcc").item<double>(), 1e-12) << c;
    EXPECT_TRUE(m.iou.isnan().any().item<bool>()) << c << ": the fixture has a class absent from both maps";
  }
  // A label that is neither a class nor the ignore index is bad data, not a silent last-bin count.
  EXPECT_THROW(SegAreas::of(torch::zeros({2, 2}), torch::full({2, 2}, 7), 5), c10::Error);
}

TEST(GoldenSeg, RelativePositionTablesResizeFrom14To32And16AsTheOfficialLoader) {
  const auto f = read_safetensors(test::data_dir() / "golden/seg_rel_pos_resize.safetensors");
  const auto& t14 = f.tensors.at("table14");
  EXPECT_TRUE(test::close(resize_rel_pos_table(t14, 3972), f.tensors.at("table32"), 1e-6, 1e-5, kRegen));
  EXPECT_TRUE(test::close(resize_rel_pos_table(t14, 964), f.tensors.at("table16"), 1e-6, 1e-5, kRegen));
  const auto coords = rel_pos_resize_coordinates(27, 63);
  EXPECT_TRUE(test::close(torch::tensor(coords, torch::kDouble), f.tensors.at("coords14_32"), 1e-9, 1e-9));
}

// mmseg's PhotoMetricDistortion with the fixture's draws, exactly (uint8 truncation, OpenCV's 8-bit HSV, hue
// wrapping mod 180, contrast before or after the HSV steps).
TEST(GoldenSeg, PhotoMetricDistortionMatchesMmsegExactly) {
  const auto f = read_safetensors(test::data_dir() / "golden/seg_photometric.safetensors");
  const auto input = f.tensors.at("input").contiguous();
  const cv::Mat rgb(static_cast<int>(input.size(0)), static_cast<int>(input.size(1)), CV_8UC3, input.data_ptr());
  for (int j = 0; f.tensors.count("case." + std::to_string(j) + ".draw"); ++j) {
    const auto d = f.tensors.at("case." + std::to_string(j) + ".draw");
    auto value = [&](int i) -> std::optional<double> {
      const double v = d[i].item<double>();
      return std::isnan(v) ? std::nullopt : std::optional<double>(v);
    };
    data::PhotoMetricDistortion::Draw draw;
    draw.brightness = value(0);
    draw.contrast_first = d[1].item<double>() != 0;
    draw.contrast = value(2);
    draw.saturation = value(3);
    if (auto h = value(4)) draw.hue = static_cast<int>(*h);
    cv::Mat out = rgb.clone();
    data::PhotoMetricDistortion::apply_(out, draw);
    const auto got = torch::from_blob(out.data, {out.rows, out.cols, 3}, torch::kUInt8);
    const auto& want = f.tensors.at("case." + std::to_string(j) + ".output");
    EXPECT_TRUE(torch::equal(got, want)) << "case " << j << ": " << (got.to(torch::kInt) - want.to(torch::kInt)).abs().max().item<int>()
                                         << " max difference; " << kRegen;
  }
}

}  // namespace
}  // namespace beitv2
