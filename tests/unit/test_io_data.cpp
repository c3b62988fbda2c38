// Weights I/O (safetensors, state dicts) and image decoding.
#include <opencv2/imgcodecs.hpp>
#include <sys/wait.h>

#include <fstream>
#include <limits>

#include "beitv2/beitv2.h"
#include "common.h"

namespace beitv2 {
namespace {

class Io : public test::Seeded {};

TEST_F(Io, SafetensorsRoundTripsEveryDtype) {
  TensorMap in{
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2}, torch::kFloat64)},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"i64", torch::arange(7, torch::kInt64)},
      {"i32", torch::arange(3, torch::kInt32)},
      {"i16", torch::arange(3, torch::kInt16)},
      {"i8", torch::arange(-3, 3, torch::kInt8)},
      {"u8", torch::arange(250, 256, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},
  };
  test::TempDir tmp("io");
  const auto p = tmp / "all.safetensors";
  write_safetensors(p, in, {{"who", "test"}});
  auto out = read_safetensors(p);
  EXPECT_EQ(out.metadata.at("who"), "test");
  ASSERT_EQ(out.tensors.size(), in.size());
  for (const auto& [k, v] : in) {
    EXPECT_EQ(out.tensors.at(k).scalar_type(), v.scalar_type()) << k;
    EXPECT_TRUE(torch::equal(out.tensors.at(k), v)) << k;
  }
}

TEST(Safetensors, ReadsTheReferenceWritersFiles) {
  // Written by the Python safetensors package (tests/reference/gen_vit_golden.py).
  auto f = read_safetensors(test::data_dir() / "golden" / "vit_tiny_abs.safetensors");
  EXPECT_EQ(f.metadata.at("generator"), "tests/reference/gen_vit_golden.py");
  EXPECT_EQ(f.tensors.at("input").sizes(), torch::IntArrayRef({2, 3, 32, 32}));
  EXPECT_EQ(f.tensors.at("param.blocks.0.attn.qkv.weight").sizes(), torch::IntArrayRef({96, 32}));
}

std::string header_file(const std::string& json, size_t data_bytes) {
  std::string s(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i, n >>= 8) s[i] = static_cast<char>(n & 0xff);
  return s + json + std::string(data_bytes, '\x01');
}

std::string parse_error(const std::string& bytes) {
  try {
    parse_safetensors(bytes.data(), bytes.size(), "bad.safetensors");
  } catch (const IoError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(parse_error(header_file(ok, 8)), "no error");
  struct Case {
    std::string bytes, expect;
  };
  std::string huge_len(8, '\xff');
  const std::vector<Case> cases = {
      {"abc", "too short"},
      {huge_len + "{}", "exceeds the 100 MiB limit"},
      {header_file(ok, 8).substr(0, 20), "runs past the end"},
      {header_file(R"([1,2])", 0), "does not start with '{'"},
      {header_file(R"({"a":)", 0), "not valid JSON"},
      {header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "outside the 4-byte data buffer"},
      {header_file(R"({"a":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}})", 8), "unsupported dtype"},
      {header_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "8 bytes for shape [3] of F32"},
      {header_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative integer"},
      {header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "data_offsets [8, 0]"},
      {header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), "must be a list [begin, end]"},
      {header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       "overlapping tensors or a hole"},
      {header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12), "4 trailing bytes"},
      {header_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8), "overflows"},
      {header_file(R"({"__metadata__":{"k":1}})", 0), "must be a string"},
      {header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", 8), "unknown field 'extra'"},
      {header_file(R"({"a":3})", 0), "entry must be an object"},
  };
  for (const auto& c : cases) {
    const auto e = parse_error(c.bytes);
    EXPECT_NE(e.find("bad.safetensors: "), std::string::npos) << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << e;
  }
  EXPECT_THROW(read_safetensors("/nonexistent.safetensors"), IoError);
}

TEST_F(Io, StrictLoadReportsEveryProblemAtOnce) {
  VisionTransformer vit(vit_preset("vit_test_tiny"));
  auto sd = state_dict(*vit);
  sd.erase("cls_token");
  sd.erase("blocks.1.mlp.fc2.bias");
  sd["teacher.x"] = torch::zeros({1});
  sd["pos_embed"] = torch::zeros({1, 5, 32});
  try {
    load_state_dict(*vit, sd, {}, "w.safetensors");
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cannot load w.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("2 missing"), std::string::npos) << m;
    EXPECT_NE(m.find("cls_token"), std::string::npos) << m;
    EXPECT_NE(m.find("blocks.1.mlp.fc2.bias"), std::string::npos) << m;
    EXPECT_NE(m.find("1 unexpected"), std::string::npos) << m;
    EXPECT_NE(m.find("teacher.x"), std::string::npos) << m;
    EXPECT_NE(m.find("pos_embed: weights [1, 5, 32] vs model [1, 17, 32]"), std::string::npos) << m;
  }
  // Skipping names the prefixes; shape mismatches stay fatal.
  sd["pos_embed"] = vit->pos_embed.detach().clone();
  sd["cls_token"] = torch::full({1, 1, 32}, 7.0);
  sd["blocks.1.mlp.fc2.bias"] = torch::zeros({32});
  auto report = load_state_dict(*vit, sd, LoadOptions{{"teacher."}});
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(vit->cls_token.flatten()[0].item<float>(), 7.0f);
}

TEST_F(Io, WrongKindsOfDtypeAndNonFiniteWeightsAreRefusedByName) {
  VisionTransformer vit(vit_preset("vit_test_tiny"));
  const auto before = vit->cls_token.detach().clone();
  auto sd = state_dict(*vit);
  sd["cls_token"] = torch::zeros({1, 1, 32}, torch::kInt32);  // silently 0.0 before
  sd["pos_embed"] = torch::ones({1, 17, 32}, torch::kInt64);
  sd["blocks.0.norm2.weight"] = torch::ones({32}, torch::kBool);
  sd["blocks.0.norm1.bias"][3] = std::numeric_limits<float>::quiet_NaN();
  sd["blocks.1.attn.proj.weight"][0][0] = std::numeric_limits<float>::infinity();
  try {
    load_state_dict(*vit, sd, {}, "w.safetensors");
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cannot load w.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("3 of the wrong kind of dtype"), std::string::npos) << m;
    EXPECT_NE(m.find("cls_token: weights Int vs model Float"), std::string::npos) << m;
    EXPECT_NE(m.find("pos_embed: weights Long vs model Float"), std::string::npos) << m;
    EXPECT_NE(m.find("blocks.0.norm2.weight: weights Bool vs model Float"), std::string::npos) << m;
    EXPECT_NE(m.find("2 with NaN or Inf values"), std::string::npos) << m;
    EXPECT_NE(m.find("blocks.0.norm1.bias: 1 of 32 values"), std::string::npos) << m;
    EXPECT_NE(m.find("blocks.1.attn.proj.weight: 1 of 1024 values"), std::string::npos) << m;
  }
  EXPECT_TRUE(torch::equal(vit->cls_token.detach(), before)) << "a refused load changed the model";
  // Converting within a kind still loads: F16/F64 into F32 parameters, I32 into an I64 index buffer; a float
  // tensor for that index buffer is refused.
  ViTConfig rel = vit_preset("vit_test_tiny");
  rel.use_abs_pos_emb = false;
  rel.use_rel_pos_bias = true;
  VisionTransformer vr(rel);
  auto sr = state_dict(*vr);
  std::string index_name;
  for (auto& [name, t] : sr) {
    if (name.find("relative_position_index") != std::string::npos) {
      index_name = name;
      t = t.to(torch::kInt32);
    } else if (t.is_floating_point()) {
      t = t.to(name == "cls_token" ? torch::kFloat64 : torch::kFloat16);
    }
  }
  ASSERT_FALSE(index_name.empty());
  EXPECT_TRUE(load_state_dict(*vr, sr).ok());
  sr[index_name] = sr[index_name].to(torch::kFloat32);
  EXPECT_THROW(load_state_dict(*vr, sr), std::runtime_error);
}

// ---- tools/convert_checkpoint.py ----

TEST(ConvertCheckpoint, BadInputsEndWithOneLineAndStatusOne) {
  const std::string py = test::build_python();
  if (py.empty()) GTEST_SKIP() << "no build-env python with torch (BEITV2_BUILD_PYTHON)";
  test::TempDir tmp("convert");
  const std::string script = (test::source_dir() / "tools/convert_checkpoint.py").string();
  const auto at = [&](const char* name) { return (tmp / name).string(); };
  std::ofstream(at("empty.pth")).flush();
  std::ofstream(at("garbage.safetensors")) << "this is not a safetensors file";
  const std::string make = py + " -c \"import torch, warnings; warnings.simplefilter('ignore'); "
                                "q = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8); "
                                "torch.save({'model': {'w': q, 'b': torch.zeros(2)}}, '" + at("quantized.pth") + "'); "
                                "torch.save({'model': {'w': torch.randn(4, 4).to_sparse()}}, '" + at("sparse.pth") + "')\"";
  ASSERT_EQ(std::system(make.c_str()), 0) << make;
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      // Before: advice to pass --unsafe-pickle.
      {at("missing.pth") + " " + at("o.safetensors"), at("missing.pth") + ": no such file"},
      // Before: a traceback (IndexError, EOFError with --unsafe-pickle).
      {at("empty.pth") + " " + at("o.safetensors"), at("empty.pth") + ": empty file"},
      {"--unsafe-pickle " + at("empty.pth") + " " + at("o.safetensors"), at("empty.pth") + ": empty file"},
      {tmp.path().string() + " " + at("o.safetensors"), tmp.path().string() + ": is a directory"},
      // Before: KeyError: torch.qint8 / RuntimeError: unsupported memory format option.
      {at("quantized.pth") + " " + at("o.safetensors"), "'w' is quantized (torch.qint8)"},
      {at("sparse.pth") + " " + at("o.safetensors"), "'w' is sparse (torch.sparse_coo)"},
      // Before: SafetensorError traceback.
      {"--to-pth " + at("garbage.safetensors") + " " + at("o.pth"), ": not a readable .safetensors file ("},
      {"--to-pth " + at("missing.safetensors") + " " + at("o.pth"), at("missing.safetensors") + ": no such file"},
  };
  for (const auto& c : cases) {
    const std::string cmd = py + " " + script + " " + c.args + " > " + at("stdout") + " 2> " + at("stderr");
    const int rc = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(rc)) << cmd;
    EXPECT_EQ(WEXITSTATUS(rc), 1) << cmd;
    const std::string err = read_file(at("stderr"));
    EXPECT_EQ(err.rfind("convert_checkpoint: ", 0), 0u) << cmd << "\n" << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "not one line: " << cmd << "\n" << err;
    EXPECT_NE(err.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << err;
    EXPECT_FALSE(std::filesystem::exists(at("o.safetensors")) || std::filesystem::exists(at("o.pth"))) << cmd;
  }
}

// ---- images ----

const std::filesystem::path kPhotos = test::photos_dir();

TEST(Images, DecodesRealPhotosToRgb) {
  auto files = data::list_images(kPhotos);
  EXPECT_GT(files.size(), 50u);
  auto img = data::decode_rgb(kPhotos / "baboon.jpg");
  EXPECT_EQ(img.type(), CV_8UC3);
  EXPECT_EQ(img.cols, 512);
  // RGB order: channel 0 is OpenCV's (BGR) channel 2.
  cv::Mat bgr = cv::imread((kPhotos / "baboon.jpg").string(), cv::IMREAD_COLOR);
  EXPECT_EQ(img.at<cv::Vec3b>(10, 20)[0], bgr.at<cv::Vec3b>(10, 20)[2]);
  EXPECT_EQ(img.at<cv::Vec3b>(10, 20)[2], bgr.at<cv::Vec3b>(10, 20)[0]);
  auto crop = data::resize_center_crop(img, 256, 224, data::parse_interpolation("bicubic"));
  EXPECT_EQ(crop.rows, 224);
  EXPECT_EQ(crop.cols, 224);
  auto batch = data::to_uint8_batch({crop, crop});
  EXPECT_EQ(batch.sizes(), torch::IntArrayRef({2, 3, 224, 224}));
  EXPECT_EQ(batch.scalar_type(), torch::kUInt8);
  auto x = data::normalize_images(batch, data::kImagenetMean, data::kImagenetStd);
  EXPECT_NEAR(x[0][0][0][0].item<float>(), (batch[0][0][0][0].item<int>() / 255.0 - 0.485) / 0.229, 1e-5);
}

TEST(Images, GreyImagesBecomeThreeChannels) {
  auto img = data::decode_rgb(kPhotos / "box.png");  // a greyscale PNG
  EXPECT_EQ(img.channels(), 3);
}

TEST(Images, ErrorsNameTheFile) {
  test::TempDir tmp("images");
  const auto p = tmp / "broken.jpg";
  std::ofstream(p) << "not a jpeg";
  try {
    data::decode_rgb(p);
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(p.string() + ": cannot decode"), std::string::npos);
  }
  EXPECT_THROW(data::decode_rgb("/nonexistent.png"), IoError);
  EXPECT_THROW(data::list_images("/nonexistent-dir"), IoError);
}

}  // namespace
}  // namespace beitv2
