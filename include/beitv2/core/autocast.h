#pragma once
// Autocast scopes for the current thread (LibTorch has no C++ context manager; this mirrors Python's).

namespace beitv2 {

/// RAII: autocast off on CPU and CUDA until scope exit, then the previous state (an fp32 island, e.g. the
/// VQ-KD task layer and quantizer, docs/reference.md §1.2–1.3).
class AutocastOff {
 public:
  AutocastOff();
  ~AutocastOff();
  AutocastOff(const AutocastOff&) = delete;
  AutocastOff& operator=(const AutocastOff&) = delete;

 private:
  bool cpu_, cuda_;
};

/// RAII: autocast to `dtype` on `device_type` (CUDA or CPU) when `enabled`, as Python's torch.autocast: the
/// previous state is restored and the cast cache cleared when the outermost scope ends.
class AutocastScope {
 public:
  AutocastScope(bool enabled, bool cuda, bool bf16 = true);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_, cuda_, prev_;
};

}  // namespace beitv2
