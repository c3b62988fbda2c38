#pragma once
// Module <-> named tensors, by the official parameter names (docs/reference.md §7).

#include <torch/nn/module.h>

#include <filesystem>
#include <string>
#include <vector>

#include "beitv2/io/safetensors.h"

namespace beitv2 {

/// Every parameter and buffer of `module` by its dotted name (detached, on the module's device).
TensorMap state_dict(const torch::nn::Module& module);

struct LoadOptions {
  /// Missing or unexpected keys starting with one of these prefixes are ignored (e.g. "head.", "teacher_model.").
  std::vector<std::string> skip_prefixes;
  /// When false, missing and unexpected keys are allowed (shape mismatches are still errors).
  bool strict = true;
};

/// What a load found; `ok()` when nothing is missing, unexpected or mis-shaped.
struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the file
  std::vector<std::string> unexpected;  // in the file, not in the module
  std::vector<std::string> mismatched;  // "name: file [..] vs module [..]"
  std::vector<std::string> wrong_dtype;  // "name: weights Long vs model Float" (float vs integer or bool)
  std::vector<std::string> non_finite;   // "name: 3 of 768 values" (NaN or Inf)
  bool ok() const {
    return missing.empty() && unexpected.empty() && mismatched.empty() && wrong_dtype.empty() && non_finite.empty();
  }
  std::string to_string() const;
};

/// Copies tensors into the module's parameters and buffers (converting dtype within a kind, keeping the module's
/// device). Throws std::runtime_error listing every problem at once when the load is not clean under `options`:
/// shape mismatches, a floating tensor for an integer or bool parameter or buffer (or the reverse) and NaN or Inf
/// values are always fatal, missing and unexpected names when strict;
/// `source` labels the message (usually the file name).
LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors, const LoadOptions& options = {},
                           const std::string& source = "state dict");

/// read_safetensors + load_state_dict.
LoadReport load_weights(torch::nn::Module& module, const std::filesystem::path& path, const LoadOptions& options = {});

/// write_safetensors(state_dict(module)).
void save_weights(const torch::nn::Module& module, const std::filesystem::path& path, const Metadata& metadata = {});

}  // namespace beitv2
