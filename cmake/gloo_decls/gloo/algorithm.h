#pragma once
// Declarations only (cmake/gloo_decls/README.md): enough of Gloo for c10d/ProcessGroupGloo.hpp to compile
// where the LibTorch build has Gloo inside libtorch_cpu but ships no Gloo headers (the pip wheels).
#include <gloo/context.h>
