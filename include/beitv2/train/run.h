#pragma once
// The run directory's files besides checkpoints (DESIGN.md): config.yaml, log.txt, metrics.jsonl; plus the
// stop flag set by SIGINT/SIGTERM and a throughput/ETA meter for the progress line.

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

namespace beitv2 {

class RunDir {
 public:
  /// Creates `path`, writes config.yaml (atomically), opens metrics.jsonl for appending and mirrors the log
  /// into log.txt.
  RunDir(std::filesystem::path path, const std::string& config_yaml);
  /// Appends one JSON object as a line and flushes.
  void metrics(const nlohmann::json& record);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream metrics_;
};

/// SIGINT/SIGTERM request a clean stop (finish the step, save, exit); a second signal exits at once.
class StopSignal {
 public:
  /// Installs the handlers (idempotent).
  static void install();
  static bool requested();
  /// For tests.
  static void request();
  static void clear();
};

/// Images/s and ETA over a sliding start point.
class Throughput {
 public:
  void start(int64_t step);
  /// images/s since start; 0 before any step.
  double images_per_s(int64_t step, int64_t batch) const;
  /// "1h02m" style remaining time at the current rate.
  std::string eta(int64_t step, int64_t total) const;

 private:
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  int64_t step0_ = 0;
};

}  // namespace beitv2
