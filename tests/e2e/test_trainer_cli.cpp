// The trainers as a user runs them: real processes, signals, kill -9, a full disk, a second trainer on the
// same run directory, bad configs. train-vqkd and pretrain-beitv2 share the loop, so the guarantees are
// checked on both.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <thread>

#include "beitv2/beitv2.h"
#include "beitv2/train/checkpoint.h"
#include "beitv2/train/pretrain_trainer.h"
#include "beitv2/train/vqkd_trainer.h"
#include "common.h"

namespace beitv2 {
namespace {

// vqkd_test_tiny against a vit_test_tiny native teacher (32-d targets), 32 photos, batch 8 (4 steps/epoch).
std::string vqkd_yaml(const std::filesystem::path& out, int64_t steps, int64_t save_every = 4) {
  return "model:\n  preset: vqkd_test_tiny\n  target_dim: 32\n"
         "teacher:\n  kind: native\n  model:\n    preset: vit_test_tiny\n"
         "data:\n  train: " + test::photos_dir().string() + "\n  val: " + test::photos_dir().string() + "\n"
         "  batch_size: 8\n  workers: 2\n  limit: 32\n  val_batch_size: 32\n"
         "optim:\n  lr: 2.0e-3\n  scale_lr: false\n  warmup_steps: 2\n"
         "train:\n  steps: " + std::to_string(steps) + "\n  log_every: 4\n  save_every: " + std::to_string(save_every) +
         "\n  keep_last: 1000\n  threads: 1\n  plot_images: 2\n  out_dir: " + out.string() + "\n";
}

// A tokenizer for pretrain-beitv2, trained once per test binary run (40 steps, ~5 s).
const std::filesystem::path& tokenizer() {
  static test::TempDir dir("cli_tokenizer");
  static const std::filesystem::path path = [] {
    std::ofstream(dir / "vqkd.yaml") << vqkd_yaml(dir / "vqkd", 40, 40);
    return train_vqkd(VqkdTrainConfig::load((dir / "vqkd.yaml").string())).tokenizer;
  }();
  return path;
}

std::string pretrain_yaml(const std::filesystem::path& out, int64_t steps, int64_t save_every = 4) {
  return "model:\n  preset: beitv2_test_tiny\n"
         "tokenizer:\n  path: " + tokenizer().string() + "\n"
         "data:\n  train: " + test::photos_dir().string() + "\n  batch_size: 8\n  limit: 32\n  workers: 2\n"
         "mask:\n  num_patches: 6\n  min_patches: 2\n"
         "optim:\n  lr: 2.0e-3\n  warmup_steps: 2\n"
         "train:\n  steps: " + std::to_string(steps) + "\n  log_every: 4\n  save_every: " + std::to_string(save_every) +
         "\n  keep_last: 1000\n  threads: 1\n  out_dir: " + out.string() + "\n";
}

struct Trainer {
  std::string binary;
  std::string (*yaml)(const std::filesystem::path&, int64_t, int64_t);
};
// gtest prints a parameter with this (instead of its bytes).
void PrintTo(const Trainer& t, std::ostream* os) { *os << t.binary; }

const Trainer kVqkd{"train-vqkd", vqkd_yaml};
const Trainer kPretrain{"pretrain-beitv2", pretrain_yaml};

struct Result {
  int rc;
  std::string err;
};

// Runs `bash -c "<prefix> exec BIN ARGS"` with stdout discarded and stderr captured.
Result run_cli(const std::string& binary, const std::string& args, const std::string& prefix = "") {
  test::TempDir tmp("cli_err");
  const std::string cmd = "bash -c '" + prefix + " exec " + std::string(BEITV2_BIN_DIR) + "/" + binary + " " + args +
                          "' > /dev/null 2> " + (tmp / "err").string();
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(tmp / "err")};
}

// Starts `BIN --config CONFIG --resume auto` as a child process (output discarded); returns its pid.
pid_t spawn(const std::string& binary, const std::filesystem::path& config) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string bin = std::string(BEITV2_BIN_DIR) + "/" + binary;
    const std::string cfg = config.string();
    ::freopen("/dev/null", "w", stdout);
    ::freopen("/dev/null", "w", stderr);
    ::execl(bin.c_str(), bin.c_str(), "--config", cfg.c_str(), "--resume", "auto", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// Waits until `path` exists (the trainer got going), at most `seconds`.
bool wait_for_file(const std::filesystem::path& path, double seconds) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

class TrainerCli : public ::testing::TestWithParam<Trainer> {};

TEST_P(TrainerCli, SigtermFinishesTheStepSavesAndExitsCleanly) {
  test::TempDir dir("cli_term");
  std::ofstream(dir / "config.yaml") << GetParam().yaml(dir / "run", 100000, 1000);
  const pid_t pid = spawn(GetParam().binary, dir / "config.yaml");
  ASSERT_TRUE(wait_for_file(dir / "run/metrics.jsonl", 60));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ::kill(pid, SIGTERM);
  const int status = wait_for(pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  CheckpointManager ckpt(dir / "run", 3);
  ASSERT_TRUE(ckpt.newest_verified().has_value()) << "no checkpoint saved on SIGTERM";
  EXPECT_NE(read_file(dir / "run/log.txt").find("stopped at step"), std::string::npos);
}

TEST_P(TrainerCli, SigkillNeverLeavesABrokenCheckpoint) {
  test::TempDir dir("cli_kill");
  std::ofstream(dir / "config.yaml") << GetParam().yaml(dir / "run", 100000, 1);
  std::mt19937 rng(7);
  int verified = 0;
  for (int round = 0; round < 4; ++round) {
    const pid_t pid = spawn(GetParam().binary, dir / "config.yaml");
    std::this_thread::sleep_for(std::chrono::milliseconds(1500 + rng() % 1500));
    ::kill(pid, SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(wait_for(pid))) << "the trainer exited before it was killed (round " << round << ")";
    CheckpointManager ckpt(dir / "run", 1000);
    auto latest = ckpt.latest();
    if (!latest) continue;  // killed before the first save
    EXPECT_NO_THROW(ckpt.verify(*latest)) << latest->string();
    ++verified;
  }
  EXPECT_GE(verified, 2) << "too few rounds reached a checkpoint to say anything";
}

TEST_P(TrainerCli, ASecondTrainerOnTheSameRunDirectoryExitsAtOnce) {
  test::TempDir dir("cli_lock");
  std::ofstream(dir / "config.yaml") << GetParam().yaml(dir / "run", 100000, 1000);
  const pid_t pid = spawn(GetParam().binary, dir / "config.yaml");
  ASSERT_TRUE(wait_for_file(dir / "run/metrics.jsonl", 60));
  auto r = run_cli(GetParam().binary, "--config " + (dir / "config.yaml").string() + " --resume auto");
  ::kill(pid, SIGKILL);
  wait_for(pid);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("is in use by another trainer (pid " + std::to_string(pid) + ")"), std::string::npos) << r.err;
}

TEST_P(TrainerCli, AFullDiskIsACleanErrorNamingTheFile) {
  // A file-size limit makes every write past 200 KB fail (EFBIG), as a full disk does; SIGXFSZ is ignored so
  // the write returns the error.
  test::TempDir dir("cli_full");
  std::ofstream(dir / "config.yaml") << GetParam().yaml(dir / "run", 8, 4);
  auto r = run_cli(GetParam().binary, "--config " + (dir / "config.yaml").string(), "ulimit -f 200; trap \"\" XFSZ;");
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(".tmp"), std::string::npos) << "the message names the file being written: " << r.err;
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Trainers, TrainerCli, ::testing::Values(kVqkd, kPretrain),
                         [](const auto& info) { return info.param.binary == "train-vqkd" ? std::string("Vqkd")
                                                                                        : std::string("Pretrain"); });

TEST(TrainerFaultInjection, KillNineAtRandomPointsThenResumeEqualsAnUninterruptedRun) {
  // 20 kill -9 at random moments of a run that checkpoints every step (so many land inside checkpoint writes),
  // each followed by --resume auto; then the run is finished. Every checkpoint left must equal the one an
  // uninterrupted run wrote at the same step, and no temporary directory may be left behind.
  test::TempDir dir("cli_fault");
  const int64_t steps = 40;
  std::ofstream(dir / "straight.yaml") << vqkd_yaml(dir / "straight", steps, 1);
  train_vqkd(VqkdTrainConfig::load((dir / "straight.yaml").string()));
  std::ofstream(dir / "killed.yaml") << vqkd_yaml(dir / "killed", steps, 1);
  std::mt19937 rng(11);
  for (int round = 0; round < 20; ++round) {
    const pid_t pid = spawn("train-vqkd", dir / "killed.yaml");
    std::this_thread::sleep_for(std::chrono::milliseconds(700 + rng() % 900));
    ::kill(pid, SIGKILL);
    wait_for(pid);
  }
  auto r = run_cli("train-vqkd", "--config " + (dir / "killed.yaml").string() + " --resume auto");
  ASSERT_EQ(r.rc, 0) << r.err;
  int compared = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir / "killed/checkpoints")) {
    const std::string name = e.path().filename();
    EXPECT_NE(name.rfind(".tmp", 0), 0u) << "temporary directory left: " << name;
    if (name.rfind("step_", 0) != 0) continue;
    for (const char* f : {"model.safetensors", "rng.safetensors"}) {
      EXPECT_EQ(read_file(e.path() / f), read_file(dir / "straight/checkpoints" / name / f)) << name << "/" << f;
    }
    ++compared;
  }
  EXPECT_GE(compared, 10);
  EXPECT_EQ(read_file(dir / "killed/tokenizer.safetensors"), read_file(dir / "straight/tokenizer.safetensors"));
}

TEST(TrainVqkdCli, BadConfigsEndWithOneClearLineBeforeTraining) {
  test::TempDir dir("cli_badcfg");
  const std::string good = vqkd_yaml(dir / "run", 4);
  struct Case {
    std::string yaml, expect;
  };
  auto replace = [&good](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  const std::vector<Case> cases = {
      {replace("  batch_size: 8", "  batch_size: 8\n  batchsize: 4"), ":12: unknown key 'data.batchsize'"},
      {replace("  batch_size: 8", "  batch_size: eight"), "data.batch_size: expected an integer, got 'eight'"},
      {replace(test::photos_dir().string() + "\n  val", "/nonexistent/images\n  val"),
       "data.train = /nonexistent/images: /nonexistent/images: no such directory"},
      {replace("  target_dim: 32", "  target_dim: 48"), "target dim 32 (teacher) vs 48 (tokenizer)"},
      {replace("  kind: native", "  kind: torchscript\n  path: /nonexistent/clip.pt"),
       "/nonexistent/clip.pt: no such teacher file"},
      {replace("  steps: 4", "  steps: 4\n  epochs: 3"), "give either epochs or steps, not both"},
      {replace("  steps: 4", "  steps: 0"), "train.steps: must be positive, got 0"},
      {replace("  workers: 2", "  workers: 30000"), "data.workers = 30000: must be in [0, 256]"},
  };
  for (const auto& c : cases) {
    std::ofstream(dir / "bad.yaml") << c.yaml;
    auto r = run_cli("train-vqkd", "--config " + (dir / "bad.yaml").string());
    EXPECT_EQ(r.rc, 1) << c.expect;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "run/checkpoints/latest"));
  }
  auto r = run_cli("train-vqkd", "--config " + (dir / "missing.yaml").string());
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("missing.yaml: cannot open config file"), std::string::npos) << r.err;
}

TEST(PretrainCli, BadInputsEndWithOneClearLineBeforeTraining) {
  test::TempDir dir("cli_pretrain_bad");
  const std::string good = pretrain_yaml(dir / "run", 4);
  auto replace = [&good](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  struct Case {
    std::string yaml, expect;
  };
  const std::vector<Case> cases = {
      // A 64x64 model has an 8x8 grid; the tokenizer's is 4x4.
      {replace("  preset: beitv2_test_tiny\n", "  preset: beitv2_test_tiny\n  backbone:\n    img_size: 64\n"),
       "its grid 4x4 and 64 codes do not fit the model's grid 8x8 and model.vocab_size 64"},
      {replace("  preset: beitv2_test_tiny\n", "  preset: beitv2_test_tiny\n  vocab_size: 8192\n"),
       "do not fit the model's grid 4x4 and model.vocab_size 8192"},
      {replace(tokenizer().string(), "/nonexistent/tokenizer.safetensors"),
       "tokenizer.path = /nonexistent/tokenizer.safetensors"},
      {replace("  num_patches: 6", "  num_patches: 17"), "mask: "},
      {replace("  preset: beitv2_test_tiny", "  preset: beitv2_huge"), "unknown MIM model 'beitv2_huge'"},
  };
  for (const auto& c : cases) {
    std::ofstream(dir / "bad.yaml") << c.yaml;
    auto r = run_cli("pretrain-beitv2", "--config " + (dir / "bad.yaml").string());
    EXPECT_EQ(r.rc, 1) << c.expect;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "run/checkpoints/latest"));
  }
}

}  // namespace
}  // namespace beitv2
