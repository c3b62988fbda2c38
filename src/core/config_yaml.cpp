#include "beitv2/core/config_yaml.h"

#include <filesystem>
#include <map>
#include <sstream>

namespace beitv2 {
namespace {

std::string join_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string describe(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "null";
}

}  // namespace

YamlMap::YamlMap(YAML::Node node, std::string file, std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)) {
  if (node_ && !node_.IsNull() && !node_.IsMap()) {
    std::ostringstream os;
    os << file_ << ":" << node_.Mark().line + 1 << ": " << (path_.empty() ? "<root>" : path_)
       << ": expected a mapping, got " << describe(node_);
    throw ConfigError(os.str());
  }
}

bool YamlMap::has(const std::string& key) const { return node_ && node_.IsMap() && node_[key]; }

std::string YamlMap::where(const std::string& key) const {
  // A value that came from a --set override was parsed on its own (position 0) or created for it (no mark):
  // name the override rather than a line of the file.
  auto from_override = [](const YAML::Mark& m) { return m.line < 0 || (m.pos == 0 && m.line == 0 && m.column == 0); };
  int line = 0;
  if (has(key)) {
    const auto mark = node_[key].Mark();
    if (from_override(mark)) return file_ + ": --set " + join_path(path_, key);
    line = mark.line;
  } else if (node_) {
    if (node_.Mark().line < 0) return file_ + ": --set " + join_path(path_, key);
    line = node_.Mark().line;
  }
  std::ostringstream os;
  os << file_ << ":" << (line >= 0 ? line + 1 : 0) << ": " << join_path(path_, key);
  return os.str();
}

void YamlMap::fail(const std::string& key, const std::string& message) const {
  throw ConfigError(where(key) + ": " + message);
}

YamlMap YamlMap::child(const std::string& key) {
  used_.insert(key);
  return YamlMap(has(key) ? node_[key] : YAML::Node(), file_, join_path(path_, key));
}

YAML::Node YamlMap::scalar(const std::string& key) {
  used_.insert(key);
  YAML::Node n = node_[key];
  if (!n.IsScalar()) fail(key, "expected a value, got " + describe(n));
  return n;
}

void YamlMap::get(const std::string& key, bool& out) {
  if (!has(key)) return;
  const std::string s = scalar(key).Scalar();
  if (s == "true" || s == "True" || s == "yes") {
    out = true;
  } else if (s == "false" || s == "False" || s == "no") {
    out = false;
  } else {
    fail(key, "expected true or false, got '" + s + "'");
  }
}

void YamlMap::get(const std::string& key, int64_t& out) {
  if (!has(key)) return;
  const std::string s = scalar(key).Scalar();
  try {
    size_t pos = 0;
    const long long v = std::stoll(s, &pos, 10);
    if (pos != s.size()) throw std::invalid_argument(s);
    out = v;
  } catch (const std::exception&) {
    fail(key, "expected an integer, got '" + s + "'");
  }
}

void YamlMap::get(const std::string& key, double& out) {
  if (!has(key)) return;
  const std::string s = scalar(key).Scalar();
  try {
    size_t pos = 0;
    const double v = std::stod(s, &pos);
    if (pos != s.size()) throw std::invalid_argument(s);
    out = v;
  } catch (const std::exception&) {
    fail(key, "expected a number, got '" + s + "'");
  }
}

void YamlMap::get(const std::string& key, std::string& out) {
  if (!has(key)) return;
  out = scalar(key).Scalar();
}

namespace {
template <typename T, typename Parse>
void get_list(YamlMap& m, YAML::Node n, const std::string& key, std::vector<T>& out, const char* what,
              Parse parse) {
  if (!n.IsSequence()) m.fail(key, std::string("expected a list of ") + what + ", got " + describe(n));
  std::vector<T> values;
  for (const auto& item : n) {
    if (!item.IsScalar()) m.fail(key, std::string("expected a list of ") + what);
    try {
      size_t pos = 0;
      const T v = parse(item.Scalar(), &pos);
      if (pos != item.Scalar().size()) throw std::invalid_argument(item.Scalar());
      values.push_back(v);
    } catch (const std::exception&) {
      m.fail(key, std::string("expected a list of ") + what + ", got element '" + item.Scalar() + "'");
    }
  }
  out = std::move(values);
}
}  // namespace

void YamlMap::get(const std::string& key, std::vector<int64_t>& out) {
  if (!has(key)) return;
  used_.insert(key);
  get_list<int64_t>(*this, node_[key], key, out, "integers",
                    [](const std::string& s, size_t* p) { return std::stoll(s, p, 10); });
}

void YamlMap::get(const std::string& key, std::vector<double>& out) {
  if (!has(key)) return;
  used_.insert(key);
  get_list<double>(*this, node_[key], key, out, "numbers",
                   [](const std::string& s, size_t* p) { return std::stod(s, p); });
}

void YamlMap::get(const std::string& key, std::vector<std::string>& out) {
  if (!has(key)) return;
  used_.insert(key);
  get_list<std::string>(*this, node_[key], key, out, "strings", [](const std::string& s, size_t* p) {
    *p = s.size();
    return s;
  });
}

void YamlMap::finish() const {
  if (!node_ || !node_.IsMap()) return;
  std::ostringstream os;
  int unknown = 0;
  for (const auto& kv : node_) {
    const std::string key = kv.first.as<std::string>();
    if (used_.count(key)) continue;
    const int line = kv.first.Mark().line;  // < 0: the key came from a --set override
    os << (unknown++ ? "; " : "") << file_;
    if (line < 0) {
      os << ": --set " << join_path(path_, key);
    } else {
      os << ":" << line + 1;
    }
    os << ": unknown key '" << join_path(path_, key) << "'";
  }
  if (unknown) throw ConfigError(os.str());
}

namespace {

// yaml-cpp keeps every pair of a mapping, a repeated key included, and node[key] finds the first: walk the
// pairs ourselves.
void check_keys(const YAML::Node& node, const std::string& label, const std::string& path) {
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) check_keys(node[i], label, path + "[" + std::to_string(i) + "]");
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> first_line;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) continue;
    const std::string key = join_path(path, kv.first.Scalar());
    const int line = kv.first.Mark().line + 1;
    const auto [it, fresh] = first_line.emplace(kv.first.Scalar(), line);
    if (!fresh) {
      throw ConfigError(label + ":" + std::to_string(line) + ": duplicate key '" + key + "' (first at line " +
                        std::to_string(it->second) + ")");
    }
    check_keys(kv.second, label, key);
  }
}

}  // namespace

void check_unique_keys(const YAML::Node& root, const std::string& label) { check_keys(root, label, ""); }

YAML::Node load_yaml_file(const std::string& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) throw ConfigError(file + ": is a directory");
  YAML::Node root;
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::BadFile&) {
    throw ConfigError(file + ": cannot open config file");
  } catch (const YAML::Exception& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  check_unique_keys(root, file);
  return root;
}

YAML::Node load_yaml_text(const std::string& text, const std::string& label) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(label + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  check_unique_keys(root, label);
  return root;
}

void apply_yaml_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("--set '" + assignment + "': expected key.path=value");
  }
  const std::string path = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw ConfigError("--set '" + assignment + "': bad value: " + e.msg);
  }
  check_unique_keys(value, "--set '" + assignment + "'");
  std::vector<std::string> keys;
  std::stringstream ss(path);
  for (std::string k; std::getline(ss, k, '.');) {
    if (k.empty()) throw ConfigError("--set '" + assignment + "': empty key in '" + path + "'");
    keys.push_back(k);
  }
  // yaml-cpp nodes are handles: walk with reset() copies so assignment writes into the tree.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    YAML::Node next = chain.back()[keys[i]];
    if (next && !next.IsMap() && !next.IsNull()) {
      throw ConfigError("--set '" + assignment + "': '" + keys[i] + "' is not a mapping");
    }
    chain.push_back(next);
  }
  chain.back()[keys.back()] = value;
}

void config_fail(const std::string& key, const std::string& value, const std::string& why) {
  throw ConfigError(key + " = " + value + ": " + why);
}

std::string indent(const std::string& text, int spaces) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) out += std::string(static_cast<size_t>(spaces), ' ') + line + "\n";
  return out;
}

}  // namespace beitv2
