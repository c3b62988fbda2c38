#pragma once
// Autocast scopes for the current thread (LibTorch has no C++ context manager; this mirrors Python's).

namespace beitv2 {

/// RAII: autocast off on CPU and CUDA until scope exit, then the previous state (an fp32 island, e.g. the
/// VQ-KD task layer and quantizer, SPEC.md §1.2–1.3).
class AutocastOff {
 public:
  AutocastOff();
  ~AutocastOff();
  AutocastOff(const AutocastOff&) = delete;
  AutocastOff& operator=(const AutocastOff&) = delete;

 private:
  bool cpu_, cuda_;
};

}  // namespace beitv2
