// Teachers for VQ-KD (docs/reference.md §1.2). TorchScript modules come from tools/export_teacher.py.
#include "beitv2/teacher/teacher.h"

#include <nlohmann/json.hpp>
#include <torch/script.h>
#include <torch/torch.h>

#include <sstream>

#include "beitv2/core/autocast.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/core/fs.h"
#include "beitv2/data/image.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/models/vit.h"
#include "beitv2/models/vqkd.h"

namespace beitv2 {

std::string TeacherInfo::to_string() const {
  std::ostringstream os;
  os << name << " (" << input_size << "x" << input_size << " -> " << grid * grid << " x " << target_dim
     << ", weights " << weights << (random_init ? ", RANDOM WEIGHTS: for tests only" : "") << ")";
  return os.str();
}

void Teacher::check_compatible(const VqkdConfig& c) const {
  auto mismatch = [this](const std::string& what, int64_t teacher, int64_t tokenizer) {
    throw ConfigError("teacher " + info_.name + " and tokenizer disagree: " + what + " " + std::to_string(teacher) +
                      " (teacher) vs " + std::to_string(tokenizer) + " (tokenizer)");
  };
  if (info_.input_size != c.encoder.img_size) mismatch("input size", info_.input_size, c.encoder.img_size);
  if (info_.grid != c.encoder.grid_size()) mismatch("patch grid", info_.grid, c.encoder.grid_size());
  if (info_.target_dim != c.target_dim) mismatch("target dim", info_.target_dim, c.target_dim);
}

namespace {

void check_images(const TeacherInfo& info, const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == info.input_size &&
                  images.size(3) == info.input_size,
              "teacher ", info.name, ": expected images (B, 3, ", info.input_size, ", ", info.input_size,
              ") in [0, 1], got ", images.sizes());
}

class TorchScriptTeacher : public Teacher {
 public:
  TorchScriptTeacher(torch::jit::Module module, TeacherInfo info, torch::Device device, bool bf16)
      : module_(std::move(module)), device_(device), bf16_(bf16 && device.is_cuda()) {
    info_ = std::move(info);
    module_.eval();
  }

  torch::Tensor targets(const torch::Tensor& images) override {
    check_images(info_, images);
    torch::InferenceMode guard;
    auto x = images.to(device_, torch::kFloat32);
    torch::Tensor out;
    {
      AutocastScope amp(bf16_, /*cuda=*/true);
      out = module_.forward({x}).toTensor();
    }
    const int64_t n = info_.grid * info_.grid;
    TORCH_CHECK(out.dim() == 3 && out.size(0) == x.size(0) && out.size(1) == n && out.size(2) == info_.target_dim,
                "teacher ", info_.name, ": produced ", out.sizes(), ", its metadata promises (B, ", n, ", ",
                info_.target_dim, ")");
    return out.to(torch::kFloat32);
  }

 private:
  torch::jit::Module module_;
  torch::Device device_;
  bool bf16_;
};

class NativeTeacher : public Teacher {
 public:
  NativeTeacher(VisionTransformer vit, TeacherInfo info, torch::Device device) : vit_(std::move(vit)), device_(device) {
    info_ = std::move(info);
    vit_->to(device_);
    vit_->eval();
    for (auto& p : vit_->parameters()) p.set_requires_grad(false);
  }

  torch::Tensor targets(const torch::Tensor& images) override {
    check_images(info_, images);
    torch::InferenceMode guard;
    auto x = images.to(device_, torch::kFloat32);
    auto mean = torch::tensor({data::kImagenetMean[0], data::kImagenetMean[1], data::kImagenetMean[2]},
                              x.options()).view({1, 3, 1, 1});
    auto std = torch::tensor({data::kImagenetStd[0], data::kImagenetStd[1], data::kImagenetStd[2]}, x.options())
                   .view({1, 3, 1, 1});
    return vit_->forward_patch_tokens((x - mean) / std).to(torch::kFloat32);
  }

 private:
  VisionTransformer vit_;
  torch::Device device_;
};

}  // namespace

std::unique_ptr<Teacher> load_torchscript_teacher(const std::filesystem::path& path, torch::Device device,
                                                  bool bf16) {
  const std::string file = path.string();
  if (!std::filesystem::is_regular_file(path)) throw IoError(file + ": no such teacher file");
  torch::jit::ExtraFilesMap extra{{"beitv2_teacher.json", ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(file, device, extra);
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    throw IoError(file + ": not a TorchScript file (" + what.substr(0, what.find('\n')) +
                  "); export teachers with tools/export_teacher.py");
  }
  const std::string& meta_text = extra["beitv2_teacher.json"];
  if (meta_text.empty()) {
    throw IoError(file + ": a TorchScript module but not a beitv2 teacher (no beitv2_teacher.json metadata); "
                  "export it with tools/export_teacher.py");
  }
  TeacherInfo info;
  try {
    auto j = nlohmann::json::parse(meta_text);
    if (j.value("format", "") != "beitv2-teacher") throw std::runtime_error("format is not beitv2-teacher");
    if (j.value("version", 0) != 1) throw std::runtime_error("unsupported version " + j["version"].dump());
    info.name = j.at("name");
    info.input_size = j.at("input_size");
    info.grid = j.at("grid");
    info.target_dim = j.at("target_dim");
    info.weights = j.value("weights", "unknown");
    info.random_init = j.value("random_init", false);
  } catch (const std::exception& e) {
    throw IoError(file + ": bad teacher metadata: " + e.what());
  }
  if (info.input_size <= 0 || info.grid <= 0 || info.target_dim <= 0) {
    throw IoError(file + ": bad teacher metadata: non-positive input_size/grid/target_dim");
  }
  return std::make_unique<TorchScriptTeacher>(std::move(module), std::move(info), device, bf16);
}

std::unique_ptr<Teacher> make_native_teacher(const ViTConfig& vit, const std::filesystem::path& weights,
                                             torch::Device device) {
  VisionTransformer model(vit);
  load_weights(*model, weights);
  return make_native_teacher(std::move(model), weights.string(), device);
}

std::unique_ptr<Teacher> make_native_teacher(VisionTransformer model, const std::string& weights, torch::Device device,
                                             bool random_init) {
  const auto& vit = model->config();
  TeacherInfo info;
  info.name = "native:" + std::filesystem::path(weights).filename().string();
  info.input_size = vit.img_size;
  info.grid = vit.grid_size();
  info.target_dim = vit.embed_dim;
  info.weights = weights;
  info.random_init = random_init;
  return std::make_unique<NativeTeacher>(std::move(model), std::move(info), device);
}

}  // namespace beitv2
