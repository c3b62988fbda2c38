#include "beitv2/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <torch/torch.h>

#include <algorithm>
#include <regex>

#include "beitv2/core/fs.h"
#include "beitv2/io/safetensors.h"
#include "beitv2/io/state_dict.h"

namespace beitv2 {

CheckpointManager::CheckpointManager(std::filesystem::path run_dir, int64_t keep_last)
    : dir_(std::move(run_dir) / "checkpoints"), keep_last_(keep_last) {
  std::filesystem::create_directories(dir_);
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) std::filesystem::remove_all(e.path());
  }
}

std::optional<std::filesystem::path> CheckpointManager::latest() const {
  const auto pointer = dir_ / "latest";
  if (!std::filesystem::exists(pointer)) return std::nullopt;
  std::string name = read_file(pointer);
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  const auto path = dir_ / name;
  if (name.empty() || !std::filesystem::is_directory(path)) {
    throw std::runtime_error(pointer.string() + " names '" + name + "', which is not a checkpoint directory");
  }
  return path;
}

std::filesystem::path CheckpointManager::save(int64_t step, const torch::nn::Module& model,
                                              torch::optim::Optimizer& optimizer, const nlohmann::json& state) {
  const std::string name = "step_" + std::to_string(step);
  const auto tmp = dir_ / (".tmp-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(tmp);
  std::filesystem::create_directories(tmp);

  save_weights(model, tmp / "model.safetensors");
  torch::save(optimizer, (tmp / "optimizer.pt").string());
  fsync_path(tmp / "optimizer.pt");
  TensorMap rng{{"cpu", torch::globalContext().defaultGenerator(torch::kCPU).get_state()}};
  if (torch::cuda::is_available()) {
    rng["cuda"] = torch::globalContext().defaultGenerator(torch::Device(torch::kCUDA, 0)).get_state();
  }
  write_safetensors(tmp / "rng.safetensors", rng);
  nlohmann::json meta = {{"format", kCheckpointFormat}, {"version", kCheckpointVersion}, {"step", step},
                         {"state", state}};
  write_file_atomic(tmp / "trainer.json", meta.dump(2) + "\n");
  fsync_path(tmp);

  const auto final_dir = dir_ / name;
  std::filesystem::remove_all(final_dir);  // a re-save of the same step (after a resume)
  std::filesystem::rename(tmp, final_dir);
  fsync_path(dir_);
  write_file_atomic(dir_ / "latest", name + "\n");
  prune(final_dir);
  return final_dir;
}

void CheckpointManager::prune(const std::filesystem::path& keep) {
  if (keep_last_ <= 0) return;
  static const std::regex step_re("step_([0-9]+)");
  std::vector<std::pair<int64_t, std::filesystem::path>> steps;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    std::smatch m;
    const std::string n = e.path().filename().string();
    if (e.is_directory() && std::regex_match(n, m, step_re)) steps.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + keep_last_ < steps.size(); ++i) {
    if (steps[i].second != keep) std::filesystem::remove_all(steps[i].second);
  }
}

nlohmann::json CheckpointManager::load(const std::filesystem::path& dir, torch::nn::Module& model,
                                       torch::optim::Optimizer& optimizer) {
  const std::string where = dir.string();
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(dir / "trainer.json"));
  } catch (const std::exception& e) {
    throw std::runtime_error(where + ": unreadable trainer.json: " + e.what());
  }
  if (meta.value("format", "") != kCheckpointFormat) {
    throw std::runtime_error(where + ": not a beitv2 checkpoint (format '" + meta.value("format", "") + "')");
  }
  if (meta.value("version", -1) != kCheckpointVersion) {
    throw std::runtime_error(where + ": checkpoint version " + std::to_string(meta.value("version", -1)) +
                             ", this build reads version " + std::to_string(kCheckpointVersion) +
                             "; resume it with the beitv2 release that wrote it");
  }
  load_weights(model, dir / "model.safetensors");
  torch::load(optimizer, (dir / "optimizer.pt").string());
  auto rng = read_safetensors(dir / "rng.safetensors").tensors;
  at::Generator cpu = torch::globalContext().defaultGenerator(torch::kCPU);  // a handle to the global one
  cpu.set_state(rng.at("cpu"));
  if (rng.count("cuda") && torch::cuda::is_available()) {
    at::Generator cuda = torch::globalContext().defaultGenerator(torch::Device(torch::kCUDA, 0));
    cuda.set_state(rng.at("cuda"));
  }
  return meta.at("state");
}

}  // namespace beitv2
