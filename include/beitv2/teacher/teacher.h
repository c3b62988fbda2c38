#pragma once
// VQ-KD teachers (docs/architecture.md "Teachers"; docs/reference.md §1.2): frozen models mapping images in
// [0, 1], (B, 3, H, W), to per-patch regression targets (B, N, D).
//
//  - TorchScriptTeacher: a module exported by tools/export_teacher.py (CLIP ViT-B/16, DINO ViT-B/16, or their
//    random-weight / tiny variants for tests), carrying its own normalisation and a `beitv2_teacher.json`
//    metadata file.
//  - NativeTeacher: any beitv2 ViT (weights + ViTConfig), giving its final normalised patch features
//    (fc_norm / norm applied, as forward_patch_tokens) of ImageNet-normalised input; offline demos use it.

#include <torch/types.h>

#include <filesystem>
#include <memory>
#include <string>

#include "beitv2/models/vit.h"

namespace beitv2 {

struct VqkdConfig;

/// What a teacher produces, checked against a tokenizer config before training.
struct TeacherInfo {
  std::string name;             ///< e.g. "clip_vit_b16"
  int64_t input_size = 0;       ///< square input side
  int64_t grid = 0;             ///< patch grid side (N = grid²)
  int64_t target_dim = 0;       ///< D
  std::string weights;          ///< where the weights came from ("RANDOM" for random init)
  bool random_init = false;     ///< loudly marked test teachers
  std::string to_string() const;
};

class Teacher {
 public:
  virtual ~Teacher() = default;
  /// images in [0, 1] (B, 3, input_size, input_size), any device -> (B, grid², target_dim) float32 on the
  /// teacher's device, without gradients.
  virtual torch::Tensor targets(const torch::Tensor& images) = 0;
  const TeacherInfo& info() const { return info_; }
  /// Throws ConfigError when the teacher's input size, grid or target dim differ from the tokenizer's.
  void check_compatible(const VqkdConfig& config) const;

 protected:
  TeacherInfo info_;
};

/// Loads a teacher file: a TorchScript `.pt` from tools/export_teacher.py. `bf16` runs it under bf16
/// autocast on CUDA (ignored on CPU). Throws IoError naming the file when it is missing, not TorchScript, or
/// not a teacher (no metadata).
std::unique_ptr<Teacher> load_torchscript_teacher(const std::filesystem::path& path,
                                                  torch::Device device = torch::kCPU, bool bf16 = false);

/// A beitv2 ViT as teacher: `weights` (.safetensors, official names) loaded strictly into VisionTransformer(vit).
std::unique_ptr<Teacher> make_native_teacher(const ViTConfig& vit, const std::filesystem::path& weights,
                                             torch::Device device = torch::kCPU);
/// The same from a model already in memory; `weights` only labels where its weights came from, `random_init`
/// marks a random-weight teacher (offline demos) as TeacherInfo::random_init.
std::unique_ptr<Teacher> make_native_teacher(VisionTransformer model, const std::string& weights,
                                             torch::Device device = torch::kCPU, bool random_init = false);

}  // namespace beitv2
