#pragma once
// One table of named model sizes (big_vision decode_variant, timm register_model). A name is a preset of
// ViTConfig; the CLIs, YAML (`model.preset`) and the every-registered-model test use it.

#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "beitv2/models/vit.h"

namespace beitv2 {

/// A table of named presets: name -> factory of a config struct.
template <typename Config>
using PresetTable = std::map<std::string, std::function<Config()>>;

/// The preset `name` of `table`; throws std::invalid_argument("unknown <kind> 'name'; known <kind>s: ...").
template <typename Config>
Config lookup_preset(const PresetTable<Config>& table, const std::string& name, const std::string& kind) {
  auto it = table.find(name);
  if (it != table.end()) return it->second();
  std::string known;
  for (const auto& [k, _] : table) known += (known.empty() ? "" : ", ") + k;
  throw std::invalid_argument("unknown " + kind + " '" + name + "'; known " + kind + "s: " + known);
}

/// The names of `table`, sorted.
template <typename Config>
std::vector<std::string> preset_names(const PresetTable<Config>& table) {
  std::vector<std::string> names;
  for (const auto& [k, _] : table) names.push_back(k);
  return names;
}

/// The config of a registered name; throws std::invalid_argument listing the known names otherwise.
ViTConfig vit_preset(const std::string& name);
/// All registered names, sorted.
std::vector<std::string> vit_preset_names();
/// VisionTransformer(vit_preset(name)).
VisionTransformer create_vit(const std::string& name);

}  // namespace beitv2
