#pragma once
// One table of named model sizes (big_vision decode_variant, timm register_model). A name is a preset of
// ViTConfig; the CLIs, YAML (`model.preset`) and the every-registered-model test use it.

#include <string>
#include <vector>

#include "beitv2/models/vit.h"

namespace beitv2 {

/// The config of a registered name; throws std::invalid_argument listing the known names otherwise.
ViTConfig vit_preset(const std::string& name);
/// All registered names, sorted.
std::vector<std::string> vit_preset_names();
/// VisionTransformer(vit_preset(name)).
VisionTransformer create_vit(const std::string& name);

}  // namespace beitv2
