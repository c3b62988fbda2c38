#include "beitv2/train/run.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"

namespace beitv2 {

RunDir::RunDir(std::filesystem::path path) : path_(std::move(path)) {
  std::error_code ec;
  std::filesystem::create_directories(path_, ec);
  if (ec) throw IoError(path_.string() + ": cannot create the run directory: " + ec.message());
  const auto lock = path_ / ".lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw IoError(lock.string() + ": cannot open: " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = read_file(lock);
    holder.erase(holder.find_last_not_of(" \n") + 1);
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw IoError(path_.string() + " is in use by another trainer (pid " + (holder.empty() ? "?" : holder) +
                    "); wait for it to end or choose another train.out_dir");
    }
    throw IoError(lock.string() + ": cannot lock: " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    throw IoError(lock.string() + ": cannot write: " + std::strerror(errno));
  }
}

RunDir::~RunDir() {
  if (!log_file_.empty()) log::remove_file(log_file_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::string RunDir::config() const {
  const auto f = path_ / "config.yaml";
  return std::filesystem::exists(f) ? read_file(f) : std::string();
}

void RunDir::write_config(const std::string& yaml) {
  const auto f = path_ / "config.yaml";
  const std::string old = config();
  if (old == yaml) return;
  if (!old.empty()) {
    int k = 1;
    while (std::filesystem::exists(path_ / ("config." + std::to_string(k) + ".yaml"))) ++k;
    write_file_atomic(path_ / ("config." + std::to_string(k) + ".yaml"), old);
  }
  write_file_atomic(f, yaml);
}

void RunDir::open_logs() {
  if (metrics_.is_open()) return;
  metrics_.open(path_ / "metrics.jsonl", std::ios::app);
  if (!metrics_) throw IoError((path_ / "metrics.jsonl").string() + ": cannot open for appending");
  log_file_ = (path_ / "log.txt").string();
  log::add_file(log_file_);
}

void RunDir::metrics(const nlohmann::json& record) {
  metrics_ << record.dump() << "\n";
  metrics_.flush();
  if (!metrics_) throw IoError((path_ / "metrics.jsonl").string() + ": write failed");
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

}  // namespace beitv2
