#pragma once
// One logger for the library and tools, backed by spdlog ("[12:00:00] [info] message" on stderr).
//
// The interface takes finished strings: spdlog 1.10 (Debian) needs fmt 9, while LibTorch ships fmt 12 in its
// include directory, so spdlog/fmt headers stay inside src/core/log.cpp, which is compiled without torch.
// Build messages with c10::str(...) or std::ostringstream.

#include <string>
#include <string_view>

namespace beitv2::log {

void debug(std::string_view message);
void info(std::string_view message);
void warn(std::string_view message);
void error(std::string_view message);

/// Also writes every message to `file` (appending), e.g. a run directory's log.txt.
void add_file(const std::string& file);
/// Stops writing to `file` (added by add_file).
void remove_file(const std::string& file);

/// Prefixes every later message with "[tag] " (e.g. "rank 1/2" in a multi-process run); "" removes it.
void set_tag(const std::string& tag);

/// Sets the level by name: trace, debug, info, warn, error, off. Throws std::invalid_argument otherwise.
void set_level(const std::string& level);

}  // namespace beitv2::log
