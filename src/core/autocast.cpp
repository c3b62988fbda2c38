#include "beitv2/core/autocast.h"

#include <ATen/autocast_mode.h>

namespace beitv2 {

AutocastOff::AutocastOff()
    : cpu_(at::autocast::is_autocast_enabled(at::kCPU)), cuda_(at::autocast::is_autocast_enabled(at::kCUDA)) {
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
}

AutocastOff::~AutocastOff() {
  at::autocast::set_autocast_enabled(at::kCPU, cpu_);
  at::autocast::set_autocast_enabled(at::kCUDA, cuda_);
}

AutocastScope::AutocastScope(bool enabled, bool cuda, bool bf16) : enabled_(enabled), cuda_(cuda), prev_(false) {
  if (!enabled_) return;
  const auto dev = cuda_ ? at::kCUDA : at::kCPU;
  prev_ = at::autocast::is_autocast_enabled(dev);
  at::autocast::set_autocast_dtype(dev, bf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::set_autocast_enabled(dev, true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(cuda_ ? at::kCUDA : at::kCPU, prev_);
}

}  // namespace beitv2
