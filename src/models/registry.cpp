// The registry of named ViT sizes.
#include "beitv2/models/registry.h"

#include <functional>
#include <map>
#include <stdexcept>


namespace beitv2 {


namespace {

ViTConfig vit(int64_t dim, int64_t depth, int64_t heads) {
  ViTConfig c;
  c.embed_dim = dim;
  c.depth = depth;
  c.num_heads = heads;
  return c;
}

// BEiT v2 backbone as fine-tuned (docs/reference.md §5): per-block rel-pos bias, layer scale, no abs pos, mean pooling.
ViTConfig beitv2(ViTConfig c, double init_values) {
  c.use_abs_pos_emb = false;
  c.use_rel_pos_bias = true;
  c.init_values = init_values;
  return c;
}

// Tiny CPU test size: 32x32 images, 8x8 patches (4x4 grid), width 32, 2 blocks, 2 heads.
ViTConfig test_tiny() {
  ViTConfig c = vit(32, 2, 2);
  c.img_size = 32;
  c.patch_size = 8;
  return c;
}

const PresetTable<ViTConfig>& registry() {
  static const PresetTable<ViTConfig> r = {
      {"vit_tiny_patch16_224", [] { return vit(192, 12, 3); }},
      {"vit_small_patch16_224", [] { return vit(384, 12, 6); }},
      {"vit_base_patch16_224", [] { return vit(768, 12, 12); }},
      {"vit_large_patch16_224", [] { return vit(1024, 24, 16); }},
      {"beitv2_base_patch16_224", [] { return beitv2(vit(768, 12, 12), 0.1); }},
      {"beitv2_large_patch16_224", [] { return beitv2(vit(1024, 24, 16), 1e-5); }},
      {"vit_test_tiny", [] { return test_tiny(); }},
      {"beitv2_test_tiny", [] { return beitv2(test_tiny(), 0.1); }},
  };
  return r;
}

}  // namespace

ViTConfig vit_preset(const std::string& name) { return lookup_preset(registry(), name, "model"); }

std::vector<std::string> vit_preset_names() { return preset_names(registry()); }

VisionTransformer create_vit(const std::string& name) { return VisionTransformer(vit_preset(name)); }

}  // namespace beitv2
