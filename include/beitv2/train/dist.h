#pragma once
// Multi-process training on torch.distributed's c10d (docs/distributed.md): the process group read from the
// environment torchrun or Slurm sets, the collectives the trainers need, and the gradient reducer.
//
// One process group per process, like torch.distributed's default group. Without a launcher's variables in the
// environment (or with a world of 1) nothing is started: every collective is then a no-op and rank() is 0, so
// single-process code runs unchanged. c10d stays inside src/train/dist.cpp; nothing here needs its headers.
//
//   torchrun --nproc-per-node 2 --no-python build/bin/train-vqkd --config configs/vqkd_tiny_photos.yaml
//   srun --ntasks 2 build/bin/train-vqkd ...          (with MASTER_ADDR exported in the batch script)

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "beitv2/core/collectives.h"

namespace beitv2::dist {

/// A failed or timed-out collective, a lost peer or a rendezvous that did not complete. The message names this
/// rank, the operation and, where it can tell, the rank that stopped answering.
class DistError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Where this process sits, as the launcher's environment says.
struct Env {
  int64_t rank = 0;
  int64_t world = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  bool agent_store = false;        ///< torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True)
  int64_t restart_count = 0;       ///< TORCHELASTIC_RESTART_COUNT (the store prefix's attempt number)
  std::string launcher = "none";   ///< "torchrun" (RANK, WORLD_SIZE, ...), "slurm" (SLURM_PROCID, ...), "none"
};

/// Reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (torchrun, or set by hand), else
/// SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID with MASTER_ADDR (required when SLURM_NTASKS > 1) and
/// MASTER_PORT (default 29500), through `get` (std::getenv when empty). A malformed or inconsistent value is a
/// ConfigError naming the variable.
Env env_from(const std::function<const char*(const char*)>& get = {});

/// How to start the process group.
struct Options {
  std::string backend = "auto";    ///< auto (nccl on cuda, gloo on cpu) | gloo | nccl
  double timeout_s = 1800;         ///< longest wait of a collective or of the rendezvous (torch's default)
  std::string device = "cpu";      ///< the trainer's device: cuda binds this process to GPU local_rank
};

/// Starts the process group for `env` once per process. A world of 1 starts nothing. A second call is a no-op
/// when it asks for the same world and backend, an error otherwise. Throws ConfigError (bad backend, NCCL
/// without CUDA) or DistError (rendezvous failed or timed out).
void init(const Env& env, const Options& options);
/// init(env_from(), options).
void init_from_environment(const Options& options);
/// Stops the heartbeat, waits for every rank (so that rank 0, which may host the store, leaves last) and drops
/// the process group. Safe to call when none was started.
void shutdown();

bool active();          ///< a process group of two or more processes is running
int64_t rank();         ///< 0 when not active
int64_t world();        ///< 1 when not active
int64_t local_rank();
bool is_main();         ///< rank 0: the process that logs, plots and writes files
std::string backend();  ///< "gloo", "nccl", or "" when not active

/// Sums `t` in place over all processes (no-op when not active).
void all_reduce_sum(torch::Tensor& t);
/// Overwrites `t` in place with rank 0's value.
void broadcast(torch::Tensor& t);
/// Every process's `t` (same shape on all), stacked in rank order: (world, ...t.sizes()).
torch::Tensor all_gather(const torch::Tensor& t);
/// Waits for every process.
void barrier();
/// Parameters and buffers of `module` from rank 0, in place.
void broadcast_module(torch::nn::Module& module);
/// Throws DistError when `value` is not the same on every process, naming `what` and each rank's value.
void check_same(int64_t value, const std::string& what);
/// The model-level hooks (sum, from rank 0, gather) over this process group; empty hooks when not active.
Collectives collectives();
/// Seconds this process spent in collectives (blocked on them) since the previous call.
double take_comm_seconds();

/// Averages gradients over the processes like PyTorch's DDP: parameters are grouped into flat buckets (in
/// reverse order, the order backward produces them), a bucket's all-reduce is launched from the gradient hooks
/// as soon as its last gradient arrives, in bucket order on every rank, so communication overlaps the rest of
/// backward. finish() launches what is left (a parameter that got no gradient on this rank contributes zeros),
/// waits, divides by the world size and sets each parameter's .grad to its averaged slice. A parameter that got
/// no gradient on any rank keeps an undefined .grad, as in one process.
class GradReducer {
 public:
  /// Hooks `params` (requires_grad, one dtype and device per bucket). `bucket_bytes`: DDP's 25 MiB default.
  explicit GradReducer(std::vector<torch::Tensor> params, int64_t bucket_bytes = 25 << 20);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  /// Before backward: forget the previous step.
  void prepare();
  /// After backward: every gradient averaged over the processes.
  void finish();
  int64_t buckets() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace beitv2::dist
