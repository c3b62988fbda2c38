// The process group, collectives and gradient reducer of include/beitv2/train/dist.h (docs/distributed.md).
// The only file that includes c10d. The rendezvous follows torch.distributed's env:// rule
// (torch/distributed/rendezvous.py): under torchrun's agent store every rank is a TCPStore client prefixed
// /worker/attempt_<restart count>; otherwise rank 0 hosts the TCPStore at MASTER_ADDR:MASTER_PORT.
#include "beitv2/train/dist.h"

#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(USE_C10D_NCCL) && !defined(BEITV2_NO_NCCL)
#define BEITV2_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "beitv2/core/config_yaml.h"
#include "beitv2/core/log.h"

namespace beitv2::dist {
namespace {

using Clock = std::chrono::steady_clock;

// ---- environment ----

int64_t parse_int(const char* name, const char* text, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min) {
    throw ConfigError(c10::str("environment: ", name, "='", text, "' is not an integer >= ", min));
  }
  return v;
}

// ---- state ----

struct State {
  Env env;
  std::string backend;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;     // prefixed, shared by the process group and the heartbeat
  c10::intrusive_ptr<c10d::Backend> pg;
  torch::Device device = torch::kCPU;        // where collectives run (CUDA for NCCL)
  std::thread heartbeat;
  std::atomic<bool> stop{false};
  double comm_seconds = 0;
};

State* g_state = nullptr;  // one per process, like torch.distributed's default group; leaked at exit on purpose
                           // (a group torn down by a static destructor can block on a lost peer)

const char* kAlive = "beitv2/alive/";

// Ranks that stopped answering: those whose heartbeat key did not advance over a few seconds. Runs only on the
// error path; when the store itself is unreachable, its host (rank 0 unless torchrun's agent hosts it) is named.
std::string suspects() {
  if (!g_state) return "";
  auto& s = *g_state;
  try {
    auto snapshot = [&] {
      std::vector<std::string> v(static_cast<size_t>(s.env.world));
      for (int64_t r = 0; r < s.env.world; ++r) {
        const std::string key = kAlive + std::to_string(r);
        if (s.store->check({key})) {
          auto bytes = s.store->get(key);
          v[static_cast<size_t>(r)] = std::string(bytes.begin(), bytes.end());
        }
      }
      return v;
    };
    const auto a = snapshot();
    std::this_thread::sleep_for(std::chrono::milliseconds(3500));
    const auto b = snapshot();
    std::string dead;
    for (int64_t r = 0; r < s.env.world; ++r) {
      if (r == s.env.rank || (!b[static_cast<size_t>(r)].empty() && a[static_cast<size_t>(r)] != b[static_cast<size_t>(r)])) continue;
      dead += (dead.empty() ? "" : ", ") + std::to_string(r);
    }
    if (dead.empty()) return "every other rank is still alive (a rank may have failed on its own: see its log)";
    return "rank " + dead + " stopped responding (it died or hangs; see its log)";
  } catch (const std::exception&) {
    if (s.env.agent_store) return "torchrun's store at " + s.env.master_addr + " is unreachable";
    return "rank 0, which hosts the rendezvous store at " + s.env.master_addr + ":" +
           std::to_string(s.env.master_port) + ", is unreachable (it died or hangs; see its log)";
  }
}

// The first line of a c10d/Gloo message, without Gloo's advice sentence (we say what we found instead).
std::string first_line(const std::exception& e) {
  std::string what = e.what();
  if (const auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
  if (const auto advice = what.find(". This is typically caused"); advice != std::string::npos) what.resize(advice);
  return what;
}

[[noreturn]] void fail(const std::string& op, const std::exception& e) {
  const std::string what = first_line(e);
  const std::string who = suspects();
  throw DistError(c10::str("rank ", rank(), ": ", op, " failed: ", what, who.empty() ? "" : "; " + who));
}

// Runs a collective to completion, timing it and turning any c10d error into a DistError.
template <class F>
void run(const std::string& op, F&& launch) {
  const auto t0 = Clock::now();
  try {
    auto work = launch();
    work->wait();
  } catch (const std::exception& e) {
    fail(op, e);
  }
  g_state->comm_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
}

// The tensor as the backend wants it (NCCL: on this process's GPU), and the way back.
torch::Tensor on_backend(const torch::Tensor& t) { return t.to(g_state->device).contiguous(); }

}  // namespace

// ---- environment ----

Env env_from(const std::function<const char*(const char*)>& get_fn) {
  auto get = [&](const char* name) -> const char* {
    const char* v = get_fn ? get_fn(name) : std::getenv(name);
    return v && *v ? v : nullptr;
  };
  Env e;
  if (get("RANK") || get("WORLD_SIZE")) {
    if (!get("RANK") || !get("WORLD_SIZE")) {
      throw ConfigError(std::string("environment: ") + (get("RANK") ? "RANK" : "WORLD_SIZE") + " is set but " +
                        (get("RANK") ? "WORLD_SIZE" : "RANK") + " is not (torchrun sets both)");
    }
    e.launcher = "torchrun";
    e.rank = parse_int("RANK", get("RANK"), 0);
    e.world = parse_int("WORLD_SIZE", get("WORLD_SIZE"), 1);
    e.local_rank = get("LOCAL_RANK") ? parse_int("LOCAL_RANK", get("LOCAL_RANK"), 0) : 0;
  } else if (get("SLURM_PROCID") && get("SLURM_NTASKS")) {
    e.launcher = "slurm";
    e.rank = parse_int("SLURM_PROCID", get("SLURM_PROCID"), 0);
    e.world = parse_int("SLURM_NTASKS", get("SLURM_NTASKS"), 1);
    e.local_rank = get("SLURM_LOCALID") ? parse_int("SLURM_LOCALID", get("SLURM_LOCALID"), 0) : 0;
  } else {
    return e;
  }
  if (e.rank >= e.world) {
    throw ConfigError(c10::str("environment: rank ", e.rank, " is not below the world size ", e.world));
  }
  if (e.world > 1 && !get("MASTER_ADDR")) {
    throw ConfigError(e.launcher == "slurm"
                          ? "environment: MASTER_ADDR is not set; in the batch script: export MASTER_ADDR=$(scontrol "
                            "show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)"
                          : "environment: WORLD_SIZE > 1 but MASTER_ADDR is not set");
  }
  if (get("MASTER_ADDR")) e.master_addr = get("MASTER_ADDR");
  if (get("MASTER_PORT")) e.master_port = parse_int("MASTER_PORT", get("MASTER_PORT"), 1);
  if (e.master_port > 65535) throw ConfigError(c10::str("environment: MASTER_PORT=", e.master_port, " is not a port"));
  e.agent_store = get("TORCHELASTIC_USE_AGENT_STORE") && std::string(get("TORCHELASTIC_USE_AGENT_STORE")) == "True";
  if (get("TORCHELASTIC_RESTART_COUNT")) {
    e.restart_count = parse_int("TORCHELASTIC_RESTART_COUNT", get("TORCHELASTIC_RESTART_COUNT"), 0);
  }
  return e;
}

// ---- the process group ----

void init(const Env& env, const Options& o) {
  if (o.backend != "auto" && o.backend != "gloo" && o.backend != "nccl") {
    throw ConfigError("train.dist_backend: '" + o.backend + "' is not one of auto, gloo, nccl");
  }
  if (!(o.timeout_s > 0)) throw ConfigError(c10::str("train.dist_timeout: ", o.timeout_s, " must be positive"));
  const std::string backend = o.backend == "auto" ? (o.device == "cuda" ? "nccl" : "gloo") : o.backend;
  if (env.world <= 1) return;
  if (g_state) {
    if (g_state->env.world != env.world || g_state->env.rank != env.rank || g_state->backend != backend) {
      throw ConfigError(c10::str("the process group is already running as rank ", g_state->env.rank, " of ",
                                 g_state->env.world, " on ", g_state->backend, "; cannot restart it as rank ",
                                 env.rank, " of ", env.world, " on ", backend));
    }
    return;
  }
  auto s = std::make_unique<State>();
  s->env = env;
  s->backend = backend;
  s->timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
  if (backend == "nccl") {
#ifndef BEITV2_NCCL
    throw ConfigError("train.dist_backend: nccl, but this LibTorch (" + std::string(TORCH_VERSION) +
                      ") was built without NCCL; use gloo or a CUDA LibTorch");
#else
    if (!torch::cuda::is_available()) throw ConfigError("train.dist_backend: nccl needs CUDA, and none is available");
    s->device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
#endif
  }
  const auto t0 = Clock::now();
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = !env.agent_store && env.rank == 0;
    so.numWorkers = env.agent_store ? std::nullopt : std::optional<std::size_t>(env.world);
    so.timeout = s->timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    c10::intrusive_ptr<c10d::Store> base = tcp;
    if (env.agent_store) {
      base = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(env.restart_count), base);
    }
    s->store = c10::make_intrusive<c10d::PrefixStore>("beitv2/", base);
    auto pg_store = c10::make_intrusive<c10d::PrefixStore>("pg/", s->store);
    if (backend == "gloo") {
      auto opts = c10d::ProcessGroupGloo::Options::create(s->timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      opts->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                                : c10d::ProcessGroupGloo::createDefaultDevice());
      s->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, static_cast<int>(env.rank),
                                                          static_cast<int>(env.world), opts);
    } else {
#ifdef BEITV2_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(env.local_rank));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = s->timeout;
      s->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, static_cast<int>(env.rank),
                                                          static_cast<int>(env.world), opts);
#endif
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    const std::string what = first_line(e);
    throw DistError(c10::str("rank ", env.rank, " of ", env.world, ": the rendezvous at ", env.master_addr, ":",
                             env.master_port, " (", env.launcher, ", ", backend, ") failed after ",
                             std::chrono::duration<double>(Clock::now() - t0).count(), " s: ", what));
  }
  // Heartbeat: a key per rank that advances every second, read only when a collective fails (suspects()).
  s->heartbeat = std::thread([st = s.get()] {
    for (int64_t n = 0; !st->stop.load(); ++n) {
      try {
        st->store->set(kAlive + std::to_string(st->env.rank), std::to_string(n));
      } catch (const std::exception&) {
        return;  // the store is gone: the next collective reports it
      }
      for (int i = 0; i < 10 && !st->stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  g_state = s.release();
  if (env.rank != 0) log::set_level("warn");  // rank 0 alone reports progress
  log::set_tag(c10::str("rank ", env.rank, "/", env.world));
  log::info(c10::str("process group: rank ", env.rank, " of ", env.world, " (local ", env.local_rank, "), ",
                     backend, ", store ", env.agent_store ? "torchrun's agent at " : "", env.master_addr, ":",
                     env.master_port, ", ready in ", std::chrono::duration<double>(Clock::now() - t0).count(), " s"));
}

void init_from_environment(const Options& options) { init(env_from(), options); }

void shutdown() {
  if (!g_state) return;
  g_state->stop = true;
  if (g_state->heartbeat.joinable()) g_state->heartbeat.join();
  barrier();
  // The State (and the group) is not destroyed: see g_state.
  g_state = nullptr;
}

bool active() { return g_state != nullptr; }
int64_t rank() { return g_state ? g_state->env.rank : 0; }
int64_t world() { return g_state ? g_state->env.world : 1; }
int64_t local_rank() { return g_state ? g_state->env.local_rank : 0; }
bool is_main() { return rank() == 0; }
std::string backend() { return g_state ? g_state->backend : std::string(); }

// ---- collectives ----

void all_reduce_sum(torch::Tensor& t) {
  if (!g_state) return;
  std::vector<torch::Tensor> v{on_backend(t)};
  run("all_reduce", [&] { return g_state->pg->allreduce(v); });
  if (!v[0].is_same(t)) t.copy_(v[0]);
}

void broadcast(torch::Tensor& t) {
  if (!g_state) return;
  std::vector<torch::Tensor> v{on_backend(t)};
  run("broadcast", [&] { return g_state->pg->broadcast(v); });
  if (!v[0].is_same(t)) t.copy_(v[0]);
}

torch::Tensor all_gather(const torch::Tensor& t) {
  if (!g_state) return t.unsqueeze(0);
  auto in = on_backend(t);
  std::vector<torch::Tensor> outs;
  for (int64_t r = 0; r < world(); ++r) outs.push_back(torch::empty_like(in));
  std::vector<std::vector<torch::Tensor>> out{outs};
  std::vector<torch::Tensor> inputs{in};
  run("all_gather", [&] { return g_state->pg->allgather(out, inputs); });
  return torch::stack(out[0]).to(t.device());
}

void barrier() {
  if (!g_state) return;
  run("barrier", [&] { return g_state->pg->barrier(); });
}

void broadcast_module(torch::nn::Module& module) {
  if (!g_state) return;
  torch::NoGradGuard ng;
  for (auto& p : module.parameters(true)) {
    auto t = p.data();
    broadcast(t);
  }
  for (auto& b : module.buffers(true)) broadcast(b);
}

void check_same(int64_t value, const std::string& what) {
  if (!g_state) return;
  auto all = all_gather(torch::tensor({value}, torch::kLong)).flatten();
  const auto v = std::vector<int64_t>(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
  bool same = true;
  for (auto x : v) same = same && x == v[0];
  if (same) return;
  std::string list;
  for (size_t r = 0; r < v.size(); ++r) list += c10::str(list.empty() ? "" : ", ", "rank ", r, ": ", v[r]);
  throw DistError("the ranks disagree on " + what + " (" + list + ")");
}

Collectives collectives() {
  if (!g_state) return {};
  Collectives c;
  c.all_reduce_sum = [](torch::Tensor& t) { all_reduce_sum(t); };
  c.broadcast = [](torch::Tensor& t) { broadcast(t); };
  c.all_gather = [](const torch::Tensor& t) { return all_gather(t); };
  return c;
}

double take_comm_seconds() {
  if (!g_state) return 0;
  return std::exchange(g_state->comm_seconds, 0.0);
}

// ---- gradient reducer ----

struct GradReducer::Impl {
  struct Bucket {
    std::vector<size_t> members;       // parameter indices
    torch::Tensor flat;                // on the backend's device
    size_t ready = 0;                  // members whose gradient arrived this step
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<torch::Tensor> params;
  std::vector<unsigned> hooks;
  std::vector<size_t> bucket_of, offset;
  std::vector<char> arrived;
  std::vector<Bucket> buckets;
  size_t next = 0;                     // the next bucket to launch (buckets launch in order on every rank)
  std::mutex mu;                       // hooks may run on autograd's device threads

  void launch_ready() {
    while (next < buckets.size() && buckets[next].ready == buckets[next].members.size()) launch(next++);
  }
  void launch(size_t b) {
    std::vector<torch::Tensor> v{buckets[b].flat};
    try {
      buckets[b].work = g_state->pg->allreduce(v);
    } catch (const std::exception& e) {
      fail("gradient all_reduce", e);
    }
  }
  void on_grad(size_t i, const torch::Tensor& g) {
    std::lock_guard<std::mutex> lock(mu);
    auto& b = buckets[bucket_of[i]];
    b.flat.narrow(0, static_cast<int64_t>(offset[i]), params[i].numel()).copy_(g.reshape(-1));
    arrived[i] = 1;
    ++b.ready;
    launch_ready();
  }
};

GradReducer::GradReducer(std::vector<torch::Tensor> params, int64_t bucket_bytes) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.params = std::move(params);
  m.bucket_of.resize(m.params.size());
  m.offset.resize(m.params.size());
  m.arrived.assign(m.params.size(), 0);
  if (!g_state) return;
  int64_t bytes = 0, numel = 0;
  for (size_t k = m.params.size(); k-- > 0;) {  // reverse: the order backward produces gradients
    const auto& p = m.params[k];
    TORCH_CHECK(p.requires_grad(), "GradReducer: parameter ", k, " does not require grad");
    const bool fresh = m.buckets.empty() || bytes >= bucket_bytes ||
                       p.scalar_type() != m.params[m.buckets.back().members.front()].scalar_type();
    if (fresh) {
      if (!m.buckets.empty()) {
        auto first = m.params[m.buckets.back().members.front()];
        m.buckets.back().flat = torch::zeros({numel}, first.options().device(g_state->device));
      }
      m.buckets.emplace_back();
      bytes = numel = 0;
    }
    m.bucket_of[k] = m.buckets.size() - 1;
    m.offset[k] = static_cast<size_t>(numel);
    m.buckets.back().members.push_back(k);
    numel += p.numel();
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  if (!m.buckets.empty()) {
    auto first = m.params[m.buckets.back().members.front()];
    m.buckets.back().flat = torch::zeros({numel}, first.options().device(g_state->device));
  }
  for (size_t k = 0; k < m.params.size(); ++k) {
    m.hooks.push_back(m.params[k].register_hook([impl = impl_.get(), k](const torch::Tensor& g) { impl->on_grad(k, g); }));
  }
}

GradReducer::~GradReducer() {
  for (size_t k = 0; k < impl_->hooks.size(); ++k) impl_->params[k].remove_hook(impl_->hooks[k]);
}

int64_t GradReducer::buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }

void GradReducer::prepare() {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  for (auto& b : m.buckets) {
    b.ready = 0;
    b.work.reset();
  }
  std::fill(m.arrived.begin(), m.arrived.end(), 0);
  m.next = 0;
}

void GradReducer::finish() {
  if (!g_state) return;
  auto& m = *impl_;
  const auto t0 = Clock::now();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    for (size_t k = 0; k < m.params.size(); ++k) {  // no gradient here this step: contribute zeros
      if (m.arrived[k]) continue;
      auto& b = m.buckets[m.bucket_of[k]];
      b.flat.narrow(0, static_cast<int64_t>(m.offset[k]), m.params[k].numel()).zero_();
      ++b.ready;
    }
    m.launch_ready();
  }
  const double inv = 1.0 / static_cast<double>(world());
  torch::NoGradGuard ng;
  for (auto& b : m.buckets) {
    try {
      b.work->wait();
    } catch (const std::exception& e) {
      fail("gradient all_reduce", e);
    }
    b.flat.mul_(inv);
    for (const auto k : b.members) {
      auto& p = m.params[k];
      auto g = b.flat.narrow(0, static_cast<int64_t>(m.offset[k]), p.numel()).view(p.sizes());
      // A parameter no rank produced a gradient for keeps none, as in one process.
      if (!m.arrived[k] && !g.any().item<bool>()) continue;
      p.mutable_grad() = g.to(p.device(), /*non_blocking=*/false, /*copy=*/true);
    }
  }
  g_state->comm_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace beitv2::dist
