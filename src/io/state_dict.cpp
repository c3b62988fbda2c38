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
    } else if (!it->second.sizes().equals(target.sizes())) {
      report.mismatched.push_back(name + ": weights " + shape_str(it->second) + " vs model " + shape_str(target));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!targets.count(name) && !skipped(name, options.skip_prefixes)) report.unexpected.push_back(name);
  }
  const bool fatal = !report.mismatched.empty() ||
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
