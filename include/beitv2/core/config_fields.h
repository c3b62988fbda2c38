#pragma once
// The vocabulary of config structs that name each field once (see the visitors in core/config_yaml.h): an
// enum field adapter and the YAML text of scalar values. Light: no YAML library here, so model headers can
// declare their fields.

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace beitv2 {

/// An enum field: read through `parse` (std::invalid_argument on a bad name), printed by to_string(value).
template <class E>
struct EnumField {
  E& value;
  E (*parse)(const std::string&);
};
template <class E>
EnumField<E> enum_field(E& value, E (*parse)(const std::string&)) {
  return {value, parse};
}

/// Text of a scalar field as YAML writes it.
inline std::string config_text(bool v) { return v ? "true" : "false"; }
inline std::string config_text(int64_t v) { return std::to_string(v); }
inline std::string config_text(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
inline std::string config_text(const std::string& v) {  // a double-quoted YAML scalar
  std::string out = "\"";
  for (char c : v) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return out + "\"";
}
template <class T>
std::string config_text(const std::vector<T>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + config_text(v[i]);
  return out + "]";
}

}  // namespace beitv2
