#pragma once
// Small enums shared by the ViT blocks, with their config-file spellings.

#include <string>

namespace beitv2 {

/// MLP activation: exact GELU (BEiT, DINO) or QuickGELU x*sigmoid(1.702x) (OpenAI CLIP).
enum class Activation { kGELU, kQuickGELU };

/// Attention kernel: torch's fused scaled_dot_product_attention, or the explicit reference path
/// (q*scale @ kᵀ + bias, softmax, @ v) kept as the readable baseline the fused path is tested against.
enum class AttentionBackend { kSdpa, kReference };

/// "gelu" | "quick_gelu"; throws std::invalid_argument naming the accepted values.
Activation parse_activation(const std::string& s);
std::string to_string(Activation a);
/// "sdpa" | "reference".
AttentionBackend parse_attention_backend(const std::string& s);
std::string to_string(AttentionBackend b);

}  // namespace beitv2
