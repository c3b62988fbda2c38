#pragma once
// Strict YAML reading for typed config structs (big_vision's lock_config, in C++).
//
// A YamlMap wraps one YAML mapping. Each `get(key, field)` reads a key if present (keeping the struct's
// default otherwise) and converts it to the field's type; `finish()` throws on any key that no `get`
// asked for. Every error names the file, the line and the dotted key path, e.g.
//   configs/x.yaml:7: model.depth: expected an integer, got 'twelve'

#include <yaml-cpp/yaml.h>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace beitv2 {

/// A configuration error: bad key, bad value or bad file. what() is one line meant for the user.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class YamlMap {
 public:
  /// `node` must be a mapping (or null, read as empty). `file` and `path` only label error messages.
  YamlMap(YAML::Node node, std::string file, std::string path);

  bool has(const std::string& key) const;
  /// The sub-mapping at `key` (an empty map if absent), marked as used.
  YamlMap child(const std::string& key);

  void get(const std::string& key, bool& out);
  void get(const std::string& key, int64_t& out);
  void get(const std::string& key, double& out);
  void get(const std::string& key, std::string& out);
  void get(const std::string& key, std::vector<int64_t>& out);
  void get(const std::string& key, std::vector<double>& out);

  /// Throws ConfigError naming every key that was present but never read.
  void finish() const;

  /// "file:line: path.key" for a key of this map (line of the map itself if the key is absent).
  std::string where(const std::string& key) const;
  /// Throws ConfigError("where(key): message").
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

  const std::string& file() const { return file_; }

 private:
  YAML::Node scalar(const std::string& key);

  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::set<std::string> used_;
};

/// Loads a YAML file; throws ConfigError naming the file on a missing file or a syntax error.
YAML::Node load_yaml_file(const std::string& file);

/// Applies "a.b.c=value" overrides (as given to --set) to a YAML tree, creating keys as needed.
/// The value is parsed as YAML (so "1e-3", "true", "[1,2]" keep their types).
void apply_yaml_override(YAML::Node& root, const std::string& assignment);

}  // namespace beitv2
