#include "beitv2/io/state_dict.h"

#include <torch/torch.h>

#include <set>
#include <sstream>

namespace beitv2 {
namespace {

bool skipped(const std::string& name, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes) {
    if (name.rfind(p, 0) == 0) return true;
  }
  return false;
}

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value().detach();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value().detach();
  return out;
}

std::string LoadReport::to_string() const {
  std::ostringstream os;
  auto list = [&os](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << "\n  " << v.size() << " " << what << ":";
    for (const auto& s : v) os << "\n    " << s;
  };
  list("missing (in the model, not in the weights)", missing);
  list("unexpected (in the weights, not in the model)", unexpected);
  list("with a shape mismatch", mismatched);
  list("of the wrong kind of dtype", wrong_dtype);
  list("with NaN or Inf values", non_finite);
  return os.str();
}

LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors, const LoadOptions& options,
                           const std::string& source) {
  LoadReport report;
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(true)) targets[p.key()] = p.value();
  for (const auto& b : module.named_buffers(true)) targets[b.key()] = b.value();

  for (const auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      if (!skipped(name, options.skip_prefixes)) report.missing.push_back(name);
      continue;
    }
    const torch::Tensor& t = it->second;
    if (!t.sizes().equals(target.sizes())) {
      report.mismatched.push_back(name + ": weights " + shape_str(t) + " vs model " + shape_str(target));
    }
    // Converting is fine within a kind (F16 -> F32, I32 -> I64); across kinds it hides a wrong file: integer or
    // bool weights in a float parameter, fractional values in an index buffer.
    if (target.is_floating_point() != t.is_floating_point() || t.is_complex() != target.is_complex()) {
      report.wrong_dtype.push_back(name + ": weights " + std::string(c10::toString(t.scalar_type())) + " vs model " +
                                   c10::toString(target.scalar_type()));
    } else if (t.is_floating_point()) {
      const int64_t bad = t.numel() - torch::isfinite(t).sum().item<int64_t>();
      if (bad > 0) {
        report.non_finite.push_back(name + ": " + std::to_string(bad) + " of " + std::to_string(t.numel()) +
                                    " values");
      }
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!targets.count(name) && !skipped(name, options.skip_prefixes)) report.unexpected.push_back(name);
  }
  const bool fatal = !report.mismatched.empty() || !report.wrong_dtype.empty() || !report.non_finite.empty() ||
                     (options.strict && (!report.missing.empty() || !report.unexpected.empty()));
  if (fatal) throw std::runtime_error("cannot load " + source + ":" + report.to_string());

  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it != tensors.end()) target.copy_(it->second);
  }
  return report;
}

LoadReport load_weights(torch::nn::Module& module, const std::filesystem::path& path, const LoadOptions& options) {
  return load_state_dict(module, read_safetensors(path).tensors, options, path.string());
}

void save_weights(const torch::nn::Module& module, const std::filesystem::path& path, const Metadata& metadata) {
  write_safetensors(path, state_dict(module), metadata);
}

}  // namespace beitv2
