// Compiled in its own object library without torch's include directory (see log.h).
#include "beitv2/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

namespace beitv2::log {
namespace {

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> log = [] {
    auto l = spdlog::stderr_color_mt("beitv2");
    l->set_pattern("[%H:%M:%S] [%^%l%$] %v");
    return l;
  }();
  return *log;
}

}  // namespace

void debug(std::string_view message) { logger().debug(message); }
void info(std::string_view message) { logger().info(message); }
void warn(std::string_view message) { logger().warn(message); }
void error(std::string_view message) { logger().error(message); }

void add_file(const std::string& file) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, /*truncate=*/false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S] [%l] %v");
  logger().sinks().push_back(sink);
  logger().flush_on(spdlog::level::info);
}

void remove_file(const std::string& file) {
  auto& sinks = logger().sinks();
  for (auto it = sinks.begin(); it != sinks.end(); ++it) {
    auto f = std::dynamic_pointer_cast<spdlog::sinks::basic_file_sink_mt>(*it);
    if (f && f->filename() == file) {
      sinks.erase(it);
      return;
    }
  }
}

void set_tag(const std::string& tag) {
  const std::string t = tag.empty() ? "" : "[" + tag + "] ";
  logger().sinks().front()->set_pattern("[%H:%M:%S] [%^%l%$] " + t + "%v");
  for (size_t i = 1; i < logger().sinks().size(); ++i) {
    logger().sinks()[i]->set_pattern("[%Y-%m-%d %H:%M:%S] [%l] " + t + "%v");
  }
}

void set_level(const std::string& level) {
  const auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    throw std::invalid_argument("unknown log level '" + level + "' (trace, debug, info, warn, error, off)");
  }
  logger().set_level(lvl);
}

}  // namespace beitv2::log
