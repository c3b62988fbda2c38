// libFuzzer target for the safetensors reader (tests/fuzz/run.sh builds and runs it).
// Every input must either parse or throw beitv2::IoError naming the input ("fuzz: ..."); any other exception,
// a crash, or an ASan/UBSan report is a finding. c10::Error is tolerated (set BEITV2_FUZZ_STRICT=1 to make it
// a finding too).
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "beitv2/core/fs.h"
#include "beitv2/io/safetensors.h"

namespace {

[[noreturn]] void finding(const char* kind, const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s: %s\n", kind, what);
  std::abort();
}

bool strict() {
  static const bool s = std::getenv("BEITV2_FUZZ_STRICT") != nullptr;
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = beitv2::parse_safetensors(reinterpret_cast<const char*>(data), size, "fuzz");
    // A parsed file's tensors tile the data buffer, so their bytes cannot exceed the input.
    size_t total = 0;
    for (const auto& [name, t] : f.tensors) total += t.nbytes();
    if (total > size) finding("parsed tensors larger than the input", "");
  } catch (const beitv2::IoError& e) {
    if (std::string_view(e.what()).substr(0, 6) != "fuzz: ") finding("IoError not naming the input", e.what());
  } catch (const c10::Error& e) {
    if (strict()) finding("c10::Error escaped the reader", e.what());
  }
  return 0;
}
