#include "beitv2/train/config.h"

#include <sstream>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/image.h"
#include "beitv2/models/registry.h"

namespace beitv2 {
namespace {

[[noreturn]] void bad(const std::string& key, const std::string& value, const std::string& why) {
  throw ConfigError(key + " = " + value + ": " + why);
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string str(const std::string& s) { return "\"" + s + "\""; }

std::string indent(const std::string& body) {
  std::istringstream in(body);
  std::string out;
  for (std::string line; std::getline(in, line);) out += "  " + line + "\n";
  return out;
}

// Exactly one of two duration keys.
void one_of(YamlMap& m, const char* a, const char* b) {
  if (m.has(a) && m.has(b)) m.fail(b, std::string("give either ") + a + " or " + b + ", not both");
}

}  // namespace

void OptimConfig::read(YamlMap& m) {
  one_of(m, "warmup_epochs", "warmup_steps");
  m.get("lr", lr);
  m.get("scale_lr", scale_lr);
  m.get("min_lr", min_lr);
  m.get("warmup_lr", warmup_lr);
  m.get("weight_decay", weight_decay);
  m.get("beta1", beta1);
  m.get("beta2", beta2);
  m.get("eps", eps);
  m.get("warmup_epochs", warmup_epochs);
  m.get("warmup_steps", warmup_steps);
  m.get("clip_grad", clip_grad);
  m.finish();
}

void OptimConfig::validate() const {
  if (!(lr > 0)) bad("optim.lr", num(lr), "must be positive");
  if (min_lr < 0) bad("optim.min_lr", num(min_lr), "must be >= 0");
  if (weight_decay < 0) bad("optim.weight_decay", num(weight_decay), "must be >= 0");
  if (!(beta1 >= 0 && beta1 < 1)) bad("optim.beta1", num(beta1), "must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) bad("optim.beta2", num(beta2), "must be in [0, 1)");
  if (!(eps > 0)) bad("optim.eps", num(eps), "must be positive");
  if (warmup_epochs < 0) bad("optim.warmup_epochs", std::to_string(warmup_epochs), "must be >= 0");
  if (clip_grad < 0) bad("optim.clip_grad", num(clip_grad), "must be >= 0 (0 = off)");
}

std::string OptimConfig::to_yaml() const {
  std::ostringstream os;
  os << "lr: " << lr << "\nscale_lr: " << (scale_lr ? "true" : "false") << "\nmin_lr: " << min_lr
     << "\nwarmup_lr: " << warmup_lr << "\nweight_decay: " << weight_decay << "\nbeta1: " << beta1
     << "\nbeta2: " << beta2 << "\neps: " << eps << "\n"
     << (warmup_steps >= 0 ? "warmup_steps: " + std::to_string(warmup_steps)
                           : "warmup_epochs: " + std::to_string(warmup_epochs))
     << "\nclip_grad: " << clip_grad << "\n";
  return os.str();
}

void DataConfig::read(YamlMap& m) {
  m.get("train", train);
  m.get("val", val);
  m.get("batch_size", batch_size);
  m.get("val_batch_size", val_batch_size);
  m.get("workers", workers);
  m.get("min_crop_scale", min_crop_scale);
  m.get("interpolation", interpolation);
  m.get("decode_errors", decode_errors);
  m.get("limit", limit);
  m.finish();
}

void DataConfig::validate() const {
  if (train.empty()) bad("data.train", "\"\"", "a training image folder is required");
  if (batch_size <= 0) bad("data.batch_size", std::to_string(batch_size), "must be positive");
  if (val_batch_size < 0) bad("data.val_batch_size", std::to_string(val_batch_size), "must be >= 0");
  if (workers < 0) bad("data.workers", std::to_string(workers), "must be >= 0");
  if (!(min_crop_scale > 0 && min_crop_scale <= 1)) bad("data.min_crop_scale", num(min_crop_scale), "must be in (0, 1]");
  try {
    data::parse_interpolation(interpolation);
  } catch (const std::invalid_argument& e) {
    bad("data.interpolation", interpolation, e.what());
  }
  if (decode_errors != "skip" && decode_errors != "fail") bad("data.decode_errors", decode_errors, "skip or fail");
  if (limit < 0) bad("data.limit", std::to_string(limit), "must be >= 0");
}

std::string DataConfig::to_yaml() const {
  std::ostringstream os;
  os << "train: " << str(train) << "\nval: " << str(val) << "\nbatch_size: " << batch_size
     << "\nval_batch_size: " << val_batch_size << "\nworkers: " << workers << "\nmin_crop_scale: " << min_crop_scale
     << "\ninterpolation: " << interpolation << "\ndecode_errors: " << decode_errors << "\nlimit: " << limit << "\n";
  return os.str();
}

void TeacherConfig::read(YamlMap& m) {
  m.get("kind", kind);
  m.get("path", path);
  m.get("bf16", bf16);
  if (m.has("model")) {
    auto sub = m.child("model");
    native_model = vit_config_from_yaml(sub, native_model);
  }
  m.finish();
}

void TeacherConfig::validate() const {
  if (kind != "torchscript" && kind != "native") bad("teacher.kind", kind, "torchscript or native");
  if (kind == "torchscript" && path.empty()) {
    bad("teacher.path", "\"\"", "a TorchScript teacher file is required (tools/export_teacher.py makes one)");
  }
}

std::string TeacherConfig::to_yaml() const {
  std::ostringstream os;
  os << "kind: " << kind << "\npath: " << str(path) << "\nbf16: " << (bf16 ? "true" : "false") << "\n";
  if (kind == "native") os << "model:\n" << indent(native_model.to_yaml());
  return os.str();
}

void TrainConfig::read(YamlMap& m) {
  one_of(m, "epochs", "steps");
  m.get("epochs", epochs);
  m.get("steps", steps);
  m.get("seed", seed);
  m.get("out_dir", out_dir);
  m.get("log_every", log_every);
  m.get("log_seconds", log_seconds);
  m.get("save_every", save_every);
  m.get("keep_last", keep_last);
  m.get("max_nonfinite", max_nonfinite);
  m.get("device", device);
  m.get("amp", amp);
  m.get("threads", threads);
  m.get("plot_images", plot_images);
  m.finish();
}

void TrainConfig::validate() const {
  if (steps < 0) bad("train.steps", std::to_string(steps), "must be >= 0");
  if (steps == 0 && epochs <= 0) bad("train.epochs", std::to_string(epochs), "must be positive");
  if (out_dir.empty()) bad("train.out_dir", "\"\"", "required");
  if (log_every <= 0) bad("train.log_every", std::to_string(log_every), "must be positive");
  if (!(log_seconds > 0)) bad("train.log_seconds", num(log_seconds), "must be positive");
  if (save_every <= 0) bad("train.save_every", std::to_string(save_every), "must be positive");
  if (keep_last < 1) bad("train.keep_last", std::to_string(keep_last), "must be >= 1");
  if (max_nonfinite < 1) bad("train.max_nonfinite", std::to_string(max_nonfinite), "must be >= 1");
  if (device != "cpu" && device != "cuda") bad("train.device", device, "cpu or cuda");
  if (amp != "none" && amp != "bf16") bad("train.amp", amp, "none or bf16");
  if (threads < 0) bad("train.threads", std::to_string(threads), "must be >= 0");
}

std::string TrainConfig::to_yaml() const {
  std::ostringstream os;
  os << (steps > 0 ? "steps: " + std::to_string(steps) : "epochs: " + std::to_string(epochs)) << "\nseed: " << seed
     << "\nout_dir: " << str(out_dir) << "\nlog_every: " << log_every << "\nlog_seconds: " << log_seconds << "\nsave_every: " << save_every
     << "\nkeep_last: " << keep_last << "\nmax_nonfinite: " << max_nonfinite << "\ndevice: " << device
     << "\namp: " << amp << "\nthreads: " << threads << "\nplot_images: " << plot_images << "\n";
  return os.str();
}

VqkdTrainConfig VqkdTrainConfig::load(const std::string& file, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml_file(file);
  for (const auto& o : overrides) apply_yaml_override(root, o);
  YamlMap top(root, file, "");
  VqkdTrainConfig c;
  if (!top.has("model")) top.fail("model", "missing: the tokenizer (model.preset or its fields) is required");
  auto model = top.child("model");
  c.model = vqkd_config_from_yaml(model);
  auto teacher = top.child("teacher");
  c.teacher.read(teacher);
  auto data = top.child("data");
  c.data.read(data);
  auto optim = top.child("optim");
  c.optim.read(optim);
  auto train = top.child("train");
  c.train.read(train);
  top.finish();
  try {
    c.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(file + ": " + e.what());
  }
  return c;
}

void VqkdTrainConfig::validate() const {
  model.validate();
  teacher.validate();
  data.validate();
  optim.validate();
  train.validate();
}

std::string VqkdTrainConfig::to_yaml() const {
  return "model:\n" + indent(model.to_yaml()) + "teacher:\n" + indent(teacher.to_yaml()) + "data:\n" +
         indent(data.to_yaml()) + "optim:\n" + indent(optim.to_yaml()) + "train:\n" + indent(train.to_yaml());
}

}  // namespace beitv2
