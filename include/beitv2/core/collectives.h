#pragma once
// The collective operations a model needs, as plain hooks so that lower layers stay free of c10d.
// Empty hooks mean one process: all_reduce_sum and broadcast are then no-ops, gather adds a dimension of 1.

#include <torch/types.h>

#include <functional>

namespace beitv2 {

struct Collectives {
  /// Sums a tensor in place over all processes.
  std::function<void(torch::Tensor&)> all_reduce_sum;
  /// Overwrites a tensor in place with rank 0's value.
  std::function<void(torch::Tensor&)> broadcast;
  /// Every process's tensor (same shape on all), stacked in rank order: (world, ...).
  std::function<torch::Tensor(const torch::Tensor&)> all_gather;

  void sum(torch::Tensor& t) const {
    if (all_reduce_sum) all_reduce_sum(t);
  }
  void from_rank0(torch::Tensor& t) const {
    if (broadcast) broadcast(t);
  }
  /// (world, ...t.sizes()); (1, ...) in one process.
  torch::Tensor gather(const torch::Tensor& t) const { return all_gather ? all_gather(t) : t.unsqueeze(0); }
};

}  // namespace beitv2
