// linear-probe-beitv2: linear probes of a frozen backbone over cached features (a grid of heads trained together).
//
//   build/bin/linear-probe-beitv2 --config configs/linear_probe_tiny_fashion_mnist.yaml
//     [--set init.weights=runs/x/backbone.safetensors] [--set probe.lrs=[0.1,1.0]]
//
// Exit codes: 0 done, 1 error (one line on stderr), 2 bad command line.
#include <CLI/CLI.hpp>

#include <iostream>

#include "beitv2/train/dist.h"
#include "beitv2/train/linear_probe.h"

int main(int argc, char** argv) {
  std::string config;
  std::vector<std::string> overrides;
  CLI::App app{"beitv2 linear-probe-beitv2: linear probes of a frozen BEiT v2 backbone"};
  app.add_option("--config", config, "YAML config (see configs/linear_probe_*.yaml)")->required();
  app.add_option("--set", overrides, "override key.path=value (repeatable)");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto results = beitv2::linear_probe(beitv2::LinearProbeConfig::load(config, overrides));
    const bool main = beitv2::dist::is_main();
    beitv2::dist::shutdown();
    if (!main) return 0;
    std::cout << "block\tpooling\tlr\ttop1\n";
    for (const auto& r : results) std::cout << r.block << "\t" << r.pooling << "\t" << r.lr << "\t" << r.top1 << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "linear-probe-beitv2: error: " << e.what() << std::endl;
    if (beitv2::dist::active()) std::_Exit(1);  // a group with a lost peer cannot be torn down (train/cli.cpp)
    return 1;
  }
}
