#pragma once
// Filesystem helpers: crash-safe writes.

#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace beitv2 {

/// An I/O failure; what() names the file.
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Writes a file so that readers see either the old content or the complete new one, never a torn file:
/// bytes go to "<path>.tmp.<pid>", then commit() flushes, fsyncs, renames over `path` and fsyncs the folder.
/// A file that is destroyed without commit() removes its temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void commit();

 private:
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int fd_ = -1;
};

/// Flushes a file or a directory (its entries) to disk; an empty path means the current directory. Best effort:
/// a path that cannot be opened (some filesystems refuse directory fds) is skipped silently.
void fsync_path(const std::filesystem::path& path);

/// Reads a whole file; throws IoError naming it (also "<path>: is a directory").
std::string read_file(const std::filesystem::path& path);

/// Writes a whole file atomically (AtomicFile).
void write_file_atomic(const std::filesystem::path& path, const std::string& bytes);

}  // namespace beitv2
