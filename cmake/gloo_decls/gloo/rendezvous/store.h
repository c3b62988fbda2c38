#pragma once
// Declarations only (cmake/gloo_decls/README.md): enough of Gloo for c10d/ProcessGroupGloo.hpp to compile
// where the LibTorch build has Gloo inside libtorch_cpu but ships no Gloo headers (the pip wheels).
#include <chrono>
#include <string>
#include <vector>

namespace gloo::rendezvous {
// The interface c10d's GlooStore overrides (GLOO_STORE_HAS_STORE_V2 left undefined, so only these four).
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};
}  // namespace gloo::rendezvous
