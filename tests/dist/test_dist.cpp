// Multi-process training with real processes on localhost over Gloo (train/dist.h, docs/distributed.md):
// N processes with batch b equal one process with batch N*b (train-vqkd, pretrain-beitv2, and finetune-seg,
// whose BatchNorm statistics span the processes); torchrun launches the binaries; a run resumes
// with another process count; a killed rank ends the others with an error naming it.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "beitv2/beitv2.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/train/checkpoint.h"
#include "beitv2/train/dist.h"
#include "beitv2/train/pretrain_trainer.h"
#include "beitv2/train/seg_trainer.h"
#include "beitv2/train/vqkd_trainer.h"
#include "common.h"

namespace beitv2 {
namespace {

namespace fs = std::filesystem;

// ---- configs (32 photos; with batch 8 in one process, 4 steps an epoch, so the runs cross an epoch) ----

std::string vqkd_yaml(const fs::path& out, int64_t batch, int64_t steps) {
  return "model:\n  preset: vqkd_test_tiny\n  target_dim: 32\n"
         "teacher:\n  kind: native\n  model:\n    preset: vit_test_tiny\n"
         "data:\n  train: " + test::photos_dir().string() + "\n  val: " + test::photos_dir().string() + "\n"
         "  batch_size: " + std::to_string(batch) + "\n  workers: 1\n  limit: 32\n  val_batch_size: 32\n"
         "optim:\n  lr: 2.0e-3\n  scale_lr: true\n  warmup_steps: 2\n"
         "train:\n  steps: " + std::to_string(steps) + "\n  log_every: 1\n  save_every: 1000\n  threads: 1\n"
         "  plot_images: 0\n  out_dir: " + out.string() + "\n";
}

// A tokenizer for pretraining, trained once per test binary run.
const fs::path& tokenizer() {
  static test::TempDir dir("dist_tokenizer");
  static const fs::path path = [] {
    std::ofstream(dir / "vqkd.yaml") << vqkd_yaml(dir / "vqkd", 8, 20);
    return train_vqkd(VqkdTrainConfig::load((dir / "vqkd.yaml").string())).tokenizer;
  }();
  return path;
}

// The block masking keeps exactly num_patches masked per image, so the per-process means of the masked-token
// loss average to the one-process mean (as in PyTorch's DDP).
std::string pretrain_yaml(const fs::path& out, int64_t batch, int64_t steps) {
  return "model:\n  preset: beitv2_test_tiny\n"
         "tokenizer:\n  path: " + tokenizer().string() + "\n"
         "data:\n  train: " + test::photos_dir().string() + "\n  batch_size: " + std::to_string(batch) +
         "\n  limit: 32\n  workers: 1\n"
         "mask:\n  num_patches: 6\n  min_patches: 2\n"
         "optim:\n  lr: 2.0e-3\n  warmup_steps: 2\n"
         "train:\n  steps: " + std::to_string(steps) + "\n  log_every: 1\n  save_every: 1000\n  threads: 1\n"
         "  out_dir: " + out.string() + "\n";
}

// Segmentation on Fashion-MNIST scenes: no dropout or drop path (their draws differ per process), so the only
// cross-process coupling is the gradient average and SyncBatchNorm's statistics. Compared after 2 steps: this
// tiny segmenter is chaotic in fp32 (one process with 2 threads ends 2% away from one with 1 thread after 6
// steps, as far as 2 processes do), while after 2 steps the runs agree to rounding; per-process BatchNorm
// statistics (4 images instead of 8) would be far outside the tolerance of the BatchNorm buffers (2e-5). AdamW's
// eps is 1e-6 and parameters are compared at 5e-4 (a quarter of one lr step): a bias or a deconvolution followed
// by BatchNorm has gradient components that are exactly 0, so computed ones are rounding noise, which AdamW's
// normalised update turns into steps of either sign (a few elements of fpn1.0.weight).
std::string seg_yaml(const fs::path& out, int64_t batch, int64_t steps) {
  return "model:\n  backbone:\n    preset: vit_test_tiny\n    img_size: 32\n    patch_size: 4\n"
         "    use_abs_pos_emb: false\n    use_rel_pos_bias: true\n    drop_path_rate: 0.0\n"
         "  out_indices: [0, 1, 1, 1]\n  channels: 8\n  aux_channels: 4\n  num_classes: 11\n  dropout: 0.0\n"
         "init:\n  weights: \"\"\n"
         "data:\n  root: " + test::fmnist_scenes_32().string() + "\n  img_scale: [128, 32]\n  crop_size: 32\n"
         "  batch_size: " + std::to_string(batch) + "\n  workers: 1\n  limit: 32\n"
         "optim:\n  lr: 2.0e-3\n  warmup_steps: 2\n  eps: 1.0e-6\n"
         "train:\n  steps: " + std::to_string(steps) + "\n  log_every: 1\n  eval_every: 1000\n  save_every: 1000\n"
         "  threads: 1\n  out_dir: " + out.string() + "\n";
}

struct Kind {
  std::string binary;
  std::string (*yaml)(const fs::path&, int64_t, int64_t);
  std::unique_ptr<Trainer> (*make)(const std::string& file);
  int64_t steps = 6;         ///< steps before the comparison
  double param_atol = 2e-5;  ///< parameters and AdamW moments (buffers always at 2e-5)
};
void PrintTo(const Kind& k, std::ostream* os) { *os << k.binary; }

const Kind kVqkd{"train-vqkd", vqkd_yaml,
                 [](const std::string& f) { return make_vqkd_trainer(VqkdTrainConfig::load(f)); }};
const Kind kPretrain{"pretrain-beitv2", pretrain_yaml,
                     [](const std::string& f) { return make_pretrain_trainer(PretrainConfig::load(f)); }};
const Kind kSeg{"finetune-seg", seg_yaml, [](const std::string& f) { return make_seg_trainer(SegConfig::load(f)); }, 2,
                5e-4};

// ---- processes ----

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Starts `bin args...` with RANK/WORLD_SIZE/MASTER_* set as torchrun would (world 0: none), stderr to `err`.
pid_t spawn(const std::string& binary, const std::vector<std::string>& args, int rank, int world, int port,
            const fs::path& err) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (world > 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    }
    ::freopen("/dev/null", "w", stdout);
    ::freopen(err.c_str(), "w", stderr);
    const std::string bin = std::string(BEITV2_BIN_DIR) + "/" + binary;
    std::vector<char*> argv{const_cast<char*>(bin.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

int exit_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs `world` processes (0: one process without the variables) to the end; every one must exit 0.
void run_world(const Kind& kind, const fs::path& config, int world, const std::vector<std::string>& extra = {}) {
  const int port = free_port();
  std::vector<pid_t> pids;
  std::vector<std::string> args{"--config", config.string(), "--resume", "auto"};
  args.insert(args.end(), extra.begin(), extra.end());
  for (int r = 0; r < std::max(world, 1); ++r) {
    pids.push_back(spawn(kind.binary, args, r, world, port, config.parent_path() / ("err" + std::to_string(r))));
  }
  for (size_t r = 0; r < pids.size(); ++r) {
    EXPECT_EQ(exit_code(pids[r]), 0) << kind.binary << " rank " << r << " of " << world << ":\n"
                                     << read_file(config.parent_path() / ("err" + std::to_string(r)));
  }
}

// ---- comparing two runs' final checkpoints: weights, buffers (the codebook) and AdamW's state ----

struct Loaded {
  std::unique_ptr<Trainer> trainer;
  int64_t step = 0;
};

Loaded load_run(const Kind& kind, const fs::path& config) {
  Loaded l{kind.make(config.string())};
  CheckpointManager ckpt(config.parent_path() / "run", 1000);
  auto from = ckpt.newest_verified();
  EXPECT_TRUE(from.has_value()) << config;
  if (from) l.step = ckpt.load(*from, l.trainer->model(), l.trainer->optimizer()).at("step").get<int64_t>();
  return l;
}

// fp32: the same sums taken in another order (a gradient averaged over 2 processes, EMA sums added per
// process), carried through a few AdamW steps; AdamW's normalised update keeps the difference near the
// rounding of the inputs.
constexpr double kAtol = 2e-5, kRtol = 1e-4;

void expect_same_state(Loaded& a, Loaded& b, double param_atol = kAtol) {
  EXPECT_EQ(a.step, b.step);
  auto pa = a.trainer->model().named_parameters(true), pb = b.trainer->model().named_parameters(true);
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) EXPECT_TRUE(test::close(item.value(), pb[item.key()], param_atol, kRtol)) << item.key();
  auto ba = a.trainer->model().named_buffers(true), bb = b.trainer->model().named_buffers(true);
  for (const auto& item : ba) EXPECT_TRUE(test::close(item.value(), bb[item.key()], kAtol, kRtol)) << item.key();
  auto& sa = a.trainer->optimizer().state();
  auto& sb = b.trainer->optimizer().state();
  ASSERT_EQ(sa.size(), sb.size());
  ASSERT_GT(sa.size(), 0u);
  const auto& ga = a.trainer->optimizer().param_groups();
  const auto& gb = b.trainer->optimizer().param_groups();
  for (size_t g = 0; g < ga.size(); ++g) {
    for (size_t i = 0; i < ga[g].params().size(); ++i) {
      void* ka = ga[g].params()[i].unsafeGetTensorImpl();
      void* kb = gb[g].params()[i].unsafeGetTensorImpl();
      if (!sa.count(ka)) continue;
      auto& x = static_cast<torch::optim::AdamWParamState&>(*sa.at(ka));
      auto& y = static_cast<torch::optim::AdamWParamState&>(*sb.at(kb));
      EXPECT_EQ(x.step(), y.step());
      EXPECT_TRUE(test::close(x.exp_avg(), y.exp_avg(), param_atol, kRtol)) << "exp_avg of group " << g << " param " << i;
      EXPECT_TRUE(test::close(x.exp_avg_sq(), y.exp_avg_sq(), 1e-8, 1e-3)) << "exp_avg_sq of group " << g << " param " << i;
    }
  }
}

class Dist : public ::testing::TestWithParam<Kind> {};

TEST_P(Dist, TwoProcessesWithBatch4EqualOneWithBatch8) {
  const Kind& kind = GetParam();
  test::TempDir one("dist_one"), two("dist_two");
  std::ofstream(one / "config.yaml") << kind.yaml(one / "run", 8, kind.steps);
  std::ofstream(two / "config.yaml") << kind.yaml(two / "run", 4, kind.steps);
  run_world(kind, one / "config.yaml", 0);
  run_world(kind, two / "config.yaml", 2);
  auto a = load_run(kind, one / "config.yaml");
  auto b = load_run(kind, two / "config.yaml");
  EXPECT_EQ(a.step, kind.steps);
  expect_same_state(a, b, kind.param_atol);
  // Rank 0 alone wrote the run's files; its log says how the run was spread.
  const auto log = read_file(two / "run/log.txt");
  EXPECT_NE(log.find("x 2 processes (gloo)"), std::string::npos);
  EXPECT_NE(log.find("global batch 8"), std::string::npos);
  EXPECT_NE(read_file(two / "run/metrics.jsonl").find("comm_share"), std::string::npos);
}

std::string kind_name(const ::testing::TestParamInfo<Kind>& info) {
  static const char* names[] = {"vqkd", "pretrain", "seg"};
  return names[info.index];
}
INSTANTIATE_TEST_SUITE_P(Trainers, Dist, ::testing::Values(kVqkd, kPretrain, kSeg), kind_name);

TEST(DistResume, TwoProcessesStoppedThenOneResumedEqualsOneThroughout) {
  test::TempDir one("dist_r1"), mixed("dist_r2");
  std::ofstream(one / "config.yaml") << vqkd_yaml(one / "run", 8, 6);
  std::ofstream(mixed / "config.yaml") << vqkd_yaml(mixed / "run", 4, 6);
  run_world(kVqkd, one / "config.yaml", 0);
  run_world(kVqkd, mixed / "config.yaml", 2, {"--stop-after", "3"});
  // The same global batch (8) in one process: the data position and the schedule carry on.
  std::ofstream(mixed / "config.yaml") << vqkd_yaml(mixed / "run", 8, 6);
  run_world(kVqkd, mixed / "config.yaml", 0);
  auto a = load_run(kVqkd, one / "config.yaml");
  auto b = load_run(kVqkd, mixed / "config.yaml");
  EXPECT_NE(read_file(mixed / "run/log.txt").find("resumed from"), std::string::npos);
  expect_same_state(a, b);
}

TEST(DistResume, AChangedGlobalBatchIsRefused) {
  test::TempDir dir("dist_gb");
  std::ofstream(dir / "config.yaml") << vqkd_yaml(dir / "run", 4, 6);
  run_world(kVqkd, dir / "config.yaml", 2, {"--stop-after", "2"});
  const pid_t pid = spawn("train-vqkd", {"--config", (dir / "config.yaml").string(), "--resume", "auto"}, 0, 0, 0,
                          dir / "err");
  EXPECT_EQ(exit_code(pid), 1);
  EXPECT_NE(read_file(dir / "err").find("global batch changed from 8 to 4"), std::string::npos) << read_file(dir / "err");
}

TEST(DistLaunch, TorchrunStartsTheBinaryAsTwoProcesses) {
  const fs::path python = BEITV2_PYTHON;
  if (python.empty() || std::system((python.string() + " -c 'import torch.distributed.run' 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "no Python with torch to provide torchrun (" << python << ")";
  }
  const fs::path torchrun = python.parent_path() / "torchrun";
  const std::string launcher = fs::exists(torchrun) ? torchrun.string() : python.string() + " -m torch.distributed.run";
  test::TempDir dir("dist_torchrun");
  std::ofstream(dir / "config.yaml") << vqkd_yaml(dir / "run", 4, 4);
  const std::string cmd = launcher + " --standalone --nproc-per-node 2 --no-python " + std::string(BEITV2_BIN_DIR) +
                          "/train-vqkd --config " + (dir / "config.yaml").string() + " > " + (dir / "out").string() +
                          " 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << read_file(dir / "out");
  EXPECT_TRUE(fs::exists(dir / "run/tokenizer.safetensors"));
  const auto log = read_file(dir / "run/log.txt");
  EXPECT_NE(log.find("x 2 processes (gloo)"), std::string::npos) << log;
  EXPECT_NE(read_file(dir / "out").find("torchrun's agent"), std::string::npos) << read_file(dir / "out");
}

TEST(DistFailure, KillingOneRankEndsTheOtherWithAnErrorNamingIt) {
  test::TempDir dir("dist_kill");
  std::ofstream(dir / "config.yaml") << vqkd_yaml(dir / "run", 4, 100000);
  const int port = free_port();
  const std::vector<std::string> args{"--config", (dir / "config.yaml").string(), "--dist-timeout", "60"};
  const pid_t r0 = spawn("train-vqkd", args, 0, 2, port, dir / "err0");
  const pid_t r1 = spawn("train-vqkd", args, 1, 2, port, dir / "err1");
  auto logged = [&] { return fs::exists(dir / "run/metrics.jsonl") && fs::file_size(dir / "run/metrics.jsonl") > 200; };
  for (int i = 0; i < 1200 && !logged(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(dir / "run/metrics.jsonl")) << read_file(dir / "err0");
  ::kill(r1, SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = exit_code(r0);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  exit_code(r1);
  const auto err = read_file(dir / "err0");
  EXPECT_NE(rc, 0) << err;
  EXPECT_LT(waited, 60.0) << "rank 0 noticed the lost rank only after the timeout";
  EXPECT_NE(err.find("rank 1 stopped responding"), std::string::npos) << err;
  // Whatever rank 0 wrote is whole.
  CheckpointManager ckpt(dir / "run", 1000);
  for (const auto& c : ckpt.candidates()) EXPECT_NO_THROW(ckpt.verify(c)) << c;
}

TEST(DistProbe, TwoProcessesSplitTheExtractionAndGetOneProcessesProbe) {
  test::TempDir dir("dist_probe");
  const auto fm = test::fashion_mnist(30);
  auto yaml = [&](const std::string& out) {
    return "model:\n  preset: vit_test_tiny\n  img_size: 28\n  patch_size: 4\n"
           "data:\n  train: " + (fm / "train").string() + "\n  val: " + (fm / "val").string() +
           "\n  batch_size: 64\n  workers: 1\n"
           "probe:\n  blocks: [-1, -2]\n  poolings: cls,mean\n  optimizer: sgd\n  lrs: [1.0]\n  epochs: 5\n  warmup_epochs: 1\n"
           "  batch_size: 64\n  crop_pct: 1.0\n"
           "run:\n  threads: 1\n  out_dir: " + (dir / out).string() + "\n";
  };
  std::ofstream(dir / "one.yaml") << yaml("one");
  std::ofstream(dir / "two.yaml") << yaml("two");
  const int port = free_port();
  const pid_t solo = spawn("linear-probe-beitv2", {"--config", (dir / "one.yaml").string()}, 0, 0, 0, dir / "err");
  ASSERT_EQ(exit_code(solo), 0) << read_file(dir / "err");
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    pids.push_back(spawn("linear-probe-beitv2", {"--config", (dir / "two.yaml").string()}, r, 2, port,
                         dir / ("err" + std::to_string(r))));
  }
  for (int r = 0; r < 2; ++r) ASSERT_EQ(exit_code(pids[r]), 0) << read_file(dir / ("err" + std::to_string(r)));
  // Same features (each image's forward is the same, only the batch it rode in differs), same heads: the same
  // table up to a last-bit difference in features flipping at most one of the 300 test images.
  auto table = [](const fs::path& f) {
    std::map<std::string, double> m;
    std::istringstream in(read_file(f));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const auto tab = line.rfind('\t');
      m[line.substr(0, tab)] = std::stod(line.substr(tab + 1));
    }
    return m;
  };
  const auto a = table(dir / "one/probe_results.tsv"), b = table(dir / "two/probe_results.tsv");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), a.size());
  for (const auto& [k, v] : a) EXPECT_NEAR(b.at(k), v, 100.0 / 300 + 1e-9) << k;
}

TEST(DistEnv, ReadsTorchrunAndSlurmVariablesAndNamesBadOnes) {
  auto env = [](std::map<std::string, std::string> m) {
    return [m = std::move(m)](const char* k) -> const char* {
      auto it = m.find(k);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  EXPECT_EQ(dist::env_from(env({})).world, 1);
  auto t = dist::env_from(env({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "h"},
                               {"MASTER_PORT", "1234"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                               {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  EXPECT_EQ(t.launcher, "torchrun");
  EXPECT_EQ(t.rank, 1);
  EXPECT_EQ(t.world, 4);
  EXPECT_EQ(t.master_port, 1234);
  EXPECT_TRUE(t.agent_store);
  EXPECT_EQ(t.restart_count, 2);
  auto s = dist::env_from(env({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                               {"MASTER_ADDR", "node1"}}));
  EXPECT_EQ(s.launcher, "slurm");
  EXPECT_EQ(s.rank, 3);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.master_port, 29500);
  auto message = [&](std::map<std::string, std::string> m) {
    try {
      dist::env_from(env(std::move(m)));
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}).find("scontrol show hostnames"), std::string::npos);
  EXPECT_NE(message({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("RANK='x'"), std::string::npos);
  EXPECT_NE(message({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("not below"), std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}}).find("WORLD_SIZE"), std::string::npos);
}

}  // namespace
}  // namespace beitv2
