#include "beitv2/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <torch/torch.h>

#include <zlib.h>

#include <algorithm>
#include <regex>
#include <sstream>

#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"
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

namespace {

const char* const kFiles[] = {"model.safetensors", "optimizer.pt", "rng.safetensors"};
const char* const kExtraFile = "extra.safetensors";  // optional: the trainer's other tensors

uint32_t crc32_of(const std::string& bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
  for (size_t left = bytes.size(); left > 0;) {  // zlib takes uInt lengths
    const auto n = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
    crc = ::crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<uint32_t>(crc);
}

nlohmann::json file_entry(const std::string& bytes) {
  return {{"bytes", bytes.size()}, {"crc32", crc32_of(bytes)}};
}

// Throws IoError naming the first floating-point tensor that holds a NaN or an Inf.
void check_finite(const TensorMap& tensors) {
  for (const auto& [name, t] : tensors) {
    if (t.is_floating_point() && !t.isfinite().all().item<bool>()) {
      throw IoError("refusing to checkpoint: '" + name + "' holds non-finite values");
    }
  }
}

int64_t step_of(const std::filesystem::path& dir) {
  static const std::regex step_re("step_([0-9]+)");
  std::smatch m;
  const std::string n = dir.filename().string();
  return std::regex_match(n, m, step_re) ? std::stoll(m[1]) : -1;
}

}  // namespace

std::optional<std::filesystem::path> CheckpointManager::latest() const {
  const auto pointer = dir_ / "latest";
  if (!std::filesystem::exists(pointer)) return std::nullopt;
  std::string name = read_file(pointer);
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  const auto path = dir_ / name;
  if (name.empty() || !std::filesystem::is_directory(path)) return std::nullopt;
  return path;
}

std::vector<std::filesystem::path> CheckpointManager::candidates() const {
  std::vector<std::pair<int64_t, std::filesystem::path>> steps;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    const int64_t s = step_of(e.path());
    if (e.is_directory() && s >= 0 && std::filesystem::exists(e.path() / "trainer.json")) steps.emplace_back(s, e.path());
  }
  std::sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::filesystem::path> out;
  const auto named = latest();
  if (named) out.push_back(*named);
  for (const auto& [_, p] : steps) {
    if (!named || p != *named) out.push_back(p);
  }
  return out;
}

std::filesystem::path CheckpointManager::save(int64_t step, const torch::nn::Module& model,
                                              torch::optim::Optimizer& optimizer, const nlohmann::json& state,
                                              const std::string& config, const TensorMap& extra) {
  check_finite(state_dict(model));
  check_finite(extra);
  const std::string name = "step_" + std::to_string(step);
  const auto tmp = dir_ / (".tmp-" + name + "-" + std::to_string(::getpid()));
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  if (!std::filesystem::create_directories(tmp, ec) && ec) throw IoError(tmp.string() + ": " + ec.message());

  nlohmann::json files = nlohmann::json::object();
  save_weights(model, tmp / "model.safetensors");
  files["model.safetensors"] = file_entry(read_file(tmp / "model.safetensors"));
  {
    // In memory first: torch's archive writer throws from its destructor on a full disk, which aborts.
    std::ostringstream os;
    torch::save(optimizer, os);
    const std::string bytes = os.str();
    write_file_atomic(tmp / "optimizer.pt", bytes);
    files["optimizer.pt"] = file_entry(bytes);
  }
  TensorMap rng{{"cpu", torch::globalContext().defaultGenerator(torch::kCPU).get_state()}};
  if (torch::cuda::is_available()) {
    rng["cuda"] = torch::globalContext().defaultGenerator(torch::Device(torch::kCUDA, 0)).get_state();
  }
  write_safetensors(tmp / "rng.safetensors", rng);
  files["rng.safetensors"] = file_entry(read_file(tmp / "rng.safetensors"));
  if (!extra.empty()) {
    write_safetensors(tmp / kExtraFile, extra);
    files[kExtraFile] = file_entry(read_file(tmp / kExtraFile));
  }
  nlohmann::json meta = {{"format", kCheckpointFormat}, {"version", kCheckpointVersion}, {"step", step},
                         {"state", state},           {"files", files},                 {"config", config}};
  write_file_atomic(tmp / "trainer.json", meta.dump(2) + "\n");
  fsync_path(tmp);

  const auto final_dir = dir_ / name;
  std::filesystem::remove_all(final_dir, ec);  // a re-save of the same step (after a resume)
  std::filesystem::rename(tmp, final_dir, ec);
  if (ec) throw IoError(final_dir.string() + ": cannot rename the checkpoint into place: " + ec.message());
  fsync_path(dir_);
  write_file_atomic(dir_ / "latest", name + "\n");
  prune(final_dir);
  return final_dir;
}

void CheckpointManager::prune(const std::filesystem::path& keep) {
  if (keep_last_ <= 0) return;
  std::vector<std::pair<int64_t, std::filesystem::path>> steps;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    const int64_t s = step_of(e.path());
    if (e.is_directory() && s >= 0) steps.emplace_back(s, e.path());
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + keep_last_ < steps.size(); ++i) {
    if (steps[i].second != keep) std::filesystem::remove_all(steps[i].second);
  }
}

nlohmann::json CheckpointManager::verify(const std::filesystem::path& dir) const {
  const std::string where = dir.string();
  auto fail = [&](const std::string& why) -> void { throw CheckpointError(where + ": " + why); };
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(dir / "trainer.json"));
  } catch (const std::exception& e) {
    fail(std::string("unreadable trainer.json: ") + e.what());
  }
  if (!meta.is_object()) fail("trainer.json is not a JSON object");
  const auto format = meta.value("format", nlohmann::json()).is_string() ? meta["format"].get<std::string>() : "";
  if (format != kCheckpointFormat) fail("not a beitv2 checkpoint (format '" + format + "')");
  const auto version = meta.value("version", nlohmann::json());
  if (!version.is_number_integer() || version.get<int64_t>() != kCheckpointVersion) {
    fail("checkpoint version " + version.dump() + ", this build reads version " + std::to_string(kCheckpointVersion) +
         "; resume it with the beitv2 release that wrote it");
  }
  const auto step = meta.value("step", nlohmann::json());
  if (!step.is_number_integer() || step.get<int64_t>() < 0 || step.get<int64_t>() != step_of(dir)) {
    fail("trainer.json: implausible step " + step.dump() + " for directory " + dir.filename().string());
  }
  if (!meta.contains("state") || !meta["state"].is_object()) fail("trainer.json: no trainer state object");
  if (!meta.contains("files") || !meta["files"].is_object()) fail("trainer.json: no file manifest");
  std::vector<std::string> listed(std::begin(kFiles), std::end(kFiles));
  for (const auto& [f, _] : meta["files"].items()) {
    if (f == kExtraFile) {
      listed.push_back(f);
    } else if (std::find(listed.begin(), listed.end(), f) == listed.end()) {
      fail("trainer.json: unknown file '" + f + "' in the manifest");
    }
  }
  for (const auto& f : listed) {
    const auto& e = meta["files"].value(f, nlohmann::json());
    if (!e.is_object() || !e.value("bytes", nlohmann::json()).is_number_unsigned() ||
        !e.value("crc32", nlohmann::json()).is_number_unsigned()) {
      fail("trainer.json: no size and CRC-32 for " + f);
    }
    std::string bytes;
    try {
      bytes = read_file(dir / f);
    } catch (const IoError& err) {
      fail(err.what());
    }
    if (bytes.size() != e["bytes"].get<uint64_t>()) {
      fail(f + ": " + std::to_string(bytes.size()) + " bytes, the manifest says " + e["bytes"].dump());
    }
    if (crc32_of(bytes) != e["crc32"].get<uint32_t>()) fail(f + ": CRC-32 differs from the manifest (damaged)");
  }
  return meta;
}

std::optional<std::filesystem::path> CheckpointManager::newest_verified(nlohmann::json* manifest) const {
  const auto all = candidates();
  std::string problems;
  for (const auto& dir : all) {
    try {
      auto meta = verify(dir);
      if (manifest) *manifest = std::move(meta);
      if (!problems.empty()) log::warn("resuming from " + dir.string() + ", the newest checkpoint that verifies");
      return dir;
    } catch (const CheckpointError& e) {
      log::warn(std::string("skipping a damaged checkpoint: ") + e.what());
      problems += problems.empty() ? e.what() : std::string("; ") + e.what();
    }
  }
  if (!all.empty()) throw CheckpointError("no checkpoint in " + dir_.string() + " verifies: " + problems);
  return std::nullopt;
}

nlohmann::json CheckpointManager::load(const std::filesystem::path& dir, torch::nn::Module& model,
                                       torch::optim::Optimizer& optimizer, const nlohmann::json* verified,
                                       TensorMap* extra) {
  auto meta = verified ? *verified : verify(dir);
  const std::string where = dir.string();
  try {
    load_weights(model, dir / "model.safetensors");
    std::istringstream in(read_file(dir / "optimizer.pt"));
    torch::load(optimizer, in);
    auto rng = read_safetensors(dir / "rng.safetensors").tensors;
    at::Generator cpu = torch::globalContext().defaultGenerator(torch::kCPU);  // a handle to the global one
    cpu.set_state(rng.at("cpu"));
    if (rng.count("cuda") && torch::cuda::is_available()) {
      at::Generator cuda = torch::globalContext().defaultGenerator(torch::Device(torch::kCUDA, 0));
      cuda.set_state(rng.at("cuda"));
    }
    if (extra) {
      *extra = meta["files"].contains(kExtraFile) ? read_safetensors(dir / kExtraFile).tensors : TensorMap{};
    }
  } catch (const c10::Error& e) {
    throw CheckpointError(where + ": cannot restore: " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw CheckpointError(where + ": cannot restore: " + e.what());
  }
  return meta;
}

}  // namespace beitv2
