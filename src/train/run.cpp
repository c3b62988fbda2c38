#include "beitv2/train/run.h"

#include <csignal>
#include <cstdlib>

#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"

namespace beitv2 {

RunDir::RunDir(std::filesystem::path path, const std::string& config_yaml) : path_(std::move(path)) {
  std::filesystem::create_directories(path_);
  write_file_atomic(path_ / "config.yaml", config_yaml);
  metrics_.open(path_ / "metrics.jsonl", std::ios::app);
  if (!metrics_) throw IoError((path_ / "metrics.jsonl").string() + ": cannot open for appending");
  log::add_file((path_ / "log.txt").string());
}

void RunDir::metrics(const nlohmann::json& record) {
  metrics_ << record.dump() << "\n";
  metrics_.flush();
}

namespace {
std::atomic<int> g_stop{0};
extern "C" void on_signal(int sig) {
  if (g_stop.fetch_add(1) > 0) std::_Exit(128 + sig);  // second signal: leave now
}
}  // namespace

void StopSignal::install() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool StopSignal::requested() { return g_stop.load() > 0; }
void StopSignal::request() { g_stop.store(1); }
void StopSignal::clear() { g_stop.store(0); }

void Throughput::start(int64_t step) {
  t0_ = std::chrono::steady_clock::now();
  step0_ = step;
}

double Throughput::images_per_s(int64_t step, int64_t batch) const {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  return step > step0_ && s > 0 ? static_cast<double>((step - step0_) * batch) / s : 0.0;
}

std::string Throughput::eta(int64_t step, int64_t total) const {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  if (step <= step0_) return "?";
  const auto left = static_cast<int64_t>(s / static_cast<double>(step - step0_) * static_cast<double>(total - step));
  char buf[32];
  if (left >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", static_cast<long>(left / 3600), static_cast<long>(left % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", static_cast<long>(left / 60), static_cast<long>(left % 60));
  }
  return buf;
}

}  // namespace beitv2
