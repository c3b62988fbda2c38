#pragma once
// The run directory's files besides checkpoints (docs/architecture.md "Run directory"): the lock, config.yaml
// (and the history of earlier configs), log.txt, metrics.jsonl; plus the stop flag set by SIGINT/SIGTERM.

#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

namespace beitv2 {

class RunDir {
 public:
  /// Creates `path` and takes an exclusive lock on `path`/.lock for the object's life (flock: released by the
  /// kernel when the process dies). Throws IoError naming the holder's PID when another process has the run.
  explicit RunDir(std::filesystem::path path);
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  /// The config.yaml there, or "" when there is none.
  std::string config() const;
  /// Writes config.yaml atomically; an existing one with other content is first kept as config.<k>.yaml
  /// (k = 1, 2, ...), so the run's config history survives resumes with changed settings.
  void write_config(const std::string& yaml);
  /// Opens metrics.jsonl for appending and mirrors the log into log.txt (until destruction).
  void open_logs();
  /// Appends one JSON object as a line and flushes.
  void metrics(const nlohmann::json& record);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int lock_fd_ = -1;
  std::ofstream metrics_;
  std::string log_file_;
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

}  // namespace beitv2
