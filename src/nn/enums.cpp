#include "beitv2/nn/enums.h"

#include <stdexcept>

namespace beitv2 {

Activation parse_activation(const std::string& s) {
  if (s == "gelu") return Activation::kGELU;
  if (s == "quick_gelu") return Activation::kQuickGELU;
  throw std::invalid_argument("unknown activation '" + s + "' (expected gelu or quick_gelu)");
}

std::string to_string(Activation a) { return a == Activation::kGELU ? "gelu" : "quick_gelu"; }

AttentionBackend parse_attention_backend(const std::string& s) {
  if (s == "sdpa") return AttentionBackend::kSdpa;
  if (s == "reference") return AttentionBackend::kReference;
  throw std::invalid_argument("unknown attention backend '" + s + "' (expected sdpa or reference)");
}

std::string to_string(AttentionBackend b) { return b == AttentionBackend::kSdpa ? "sdpa" : "reference"; }

}  // namespace beitv2
