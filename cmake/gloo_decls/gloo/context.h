#pragma once
// Declarations only (cmake/gloo_decls/README.md): enough of Gloo for c10d/ProcessGroupGloo.hpp to compile
// where the LibTorch build has Gloo inside libtorch_cpu but ships no Gloo headers (the pip wheels).
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);  // declared for an inline c10d method; never called here
};
}  // namespace gloo
