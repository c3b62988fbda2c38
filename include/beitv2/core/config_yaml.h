#pragma once
// Strict YAML reading for typed config structs (big_vision's lock_config, in C++).
//
// A YamlMap wraps one YAML mapping. Each `get(key, field)` reads a key if present (keeping the struct's
// default otherwise) and converts it to the field's type; `finish()` throws on any key that no `get`
// asked for. Every error names the file, the line and the dotted key path, e.g.
//   configs/x.yaml:7: model.depth: expected an integer, got 'twelve'

#include <yaml-cpp/yaml.h>

#include "beitv2/core/config_fields.h"

#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
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
  void get(const std::string& key, std::vector<std::string>& out);

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

/// Loads a YAML file; throws ConfigError naming the file on a missing file, a directory, a syntax error or a
/// repeated key (check_unique_keys).
YAML::Node load_yaml_file(const std::string& file);

/// The same for YAML text held in memory (e.g. a config stored in a weights file); `label` stands for the file.
YAML::Node load_yaml_text(const std::string& text, const std::string& label);

/// Throws ConfigError("label:12: duplicate key 'data.batch_size' (first at line 3)") for the first mapping in the
/// tree that repeats a key (yaml-cpp keeps both and reads the first: configs are strict, so it is an error).
void check_unique_keys(const YAML::Node& root, const std::string& label);

/// Applies "a.b.c=value" overrides (as given to --set) to a YAML tree, creating keys as needed.
/// The value is parsed as YAML (so "1e-3", "true", "[1,2]" keep their types).
void apply_yaml_override(YAML::Node& root, const std::string& assignment);

/// Throws ConfigError("key = value: why"), the one shape of a bad-value message.
[[noreturn]] void config_fail(const std::string& key, const std::string& value, const std::string& why);

/// Every line of `text` prefixed with `spaces` spaces.
std::string indent(const std::string& text, int spaces = 2);

// ---- Config fields named once ----
//
// A config struct lists its fields in one member template, in the order they are printed:
//
//   template <class V> void visit(V& v) {
//     v("lr", lr);                       // a scalar, a string, a list, a nested config or an EnumField
//     v("steps", steps, steps > 0);      // the bool: whether to_yaml writes it (reading always accepts it)
//   }
//
// and the three visitors below read it from YAML (strictly), write it as YAML and print it as a table.

class YamlFieldReader {
 public:
  explicit YamlFieldReader(YamlMap& m) : m_(m) {}
  template <class T>
  void operator()(const char* key, T& field, bool = true) {
    if constexpr (requires { m_.get(key, field); }) {
      m_.get(key, field);
    } else {
      if (!m_.has(key)) return;
      auto sub = m_.child(key);
      read_yaml(sub, field);  // found by argument-dependent lookup
    }
  }
  template <class E>
  void operator()(const char* key, EnumField<E> field, bool = true) {
    if (!m_.has(key)) return;
    std::string s;
    m_.get(key, s);
    try {
      field.value = field.parse(s);
    } catch (const std::invalid_argument& e) {
      m_.fail(key, e.what());
    }
  }

 private:
  YamlMap& m_;
};

class YamlFieldWriter {
 public:
  template <class T>
  void operator()(const char* key, const T& field, bool emit = true) {
    if (!emit) return;
    if constexpr (requires { config_text(field); }) {
      out += std::string(key) + ": " + config_text(field) + "\n";
    } else {
      out += std::string(key) + ":\n" + indent(to_yaml(field));
    }
  }
  template <class E>
  void operator()(const char* key, EnumField<E> field, bool emit = true) {
    if (emit) out += std::string(key) + ": " + to_string(field.value) + "\n";
  }
  std::string out;
};

class FieldTablePrinter {
 public:
  explicit FieldTablePrinter(std::string prefix = "") : prefix_(std::move(prefix)) {}
  template <class T>
  void operator()(const char* key, const T& field, bool emit = true) {
    if (!emit) return;
    if constexpr (requires { config_text(field); }) {
      line(key, config_text(field));
    } else {
      FieldTablePrinter sub(prefix_ + key + ".");
      T copy = field;  // visit() is non-const (the reader needs references); printing reads a copy
      copy.visit(sub);
      out += sub.out;
    }
  }
  template <class E>
  void operator()(const char* key, EnumField<E> field, bool emit = true) {
    if (emit) line(key, to_string(field.value));
  }
  std::string out;

 private:
  void line(const char* key, const std::string& value) {
    std::string k = prefix_ + key;
    if (k.size() < 30) k.resize(30, ' ');
    out += "  " + k + " " + value + "\n";
  }
  std::string prefix_;
};

/// The fields of `config`, strictly (unknown keys are errors): what a section without presets does.
template <class T>
void read_fields(YamlMap& m, T& config) {
  YamlFieldReader r(m);
  config.visit(r);
  m.finish();
}

/// Default for nested sections: read_fields. A config with presets declares its own read_yaml overload.
template <class T>
void read_yaml(YamlMap& m, T& config) {
  read_fields(m, config);
}

/// The config as a YAML mapping (what a run directory's config.yaml holds).
template <class T>
std::string to_yaml(const T& config) {
  YamlFieldWriter w;
  T copy = config;
  copy.visit(w);
  return w.out;
}

/// Aligned "dotted.key  value" lines, one per field.
template <class T>
std::string to_table(const T& config) {
  FieldTablePrinter p;
  T copy = config;
  copy.visit(p);
  return p.out;
}

/// A section's optional `preset: NAME`: when present, `config` becomes lookup(NAME) (the lookup's
/// std::invalid_argument becomes a ConfigError naming file, line and key); the section's fields then override it.
template <class T, class Lookup>
void apply_preset(YamlMap& m, T& config, Lookup lookup) {
  if (!m.has("preset")) return;
  std::string name;
  m.get("preset", name);
  try {
    config = lookup(name);
  } catch (const std::invalid_argument& e) {
    m.fail("preset", e.what());
  }
}

/// A whole config file: YAML, "a.b=c" overrides applied, the sections read strictly over `base` (a struct
/// with visit() and validate()), validated; every ConfigError names the file.
template <class T>
T load_config(const std::string& file, const std::vector<std::string>& overrides, T base = T{}) {
  YAML::Node root = load_yaml_file(file);
  for (const auto& o : overrides) apply_yaml_override(root, o);
  YamlMap top(root, file, "");
  read_fields(top, base);
  try {
    base.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(file + ": " + e.what());
  }
  return base;
}

}  // namespace beitv2
