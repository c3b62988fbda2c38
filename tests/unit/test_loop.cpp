// The shared training loop with a fake trainer (a linear regression whose forward also bumps a buffer, as the
// VQ-KD codebook's EMA does, and whose weights have a model EMA kept through the extra-state hooks): cadence of windows, evaluations and checkpoints, the non-finite policy, stops,
// resume rules (finished runs, missing `latest`, damaged checkpoints, changed configs) and the run-dir lock.
#include <fstream>
#include <set>

#include "beitv2/core/config_yaml.h"
#include "beitv2/core/fs.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/train/checkpoint.h"
#include "beitv2/train/ema.h"
#include "beitv2/train/loop.h"
#include "beitv2/train/run.h"
#include "common.h"

namespace beitv2 {
namespace {

struct ToyImpl : torch::nn::Module {
  ToyImpl() {
    fc = register_module("fc", torch::nn::Linear(4, 1));
    calls = register_buffer("calls", torch::zeros({1}));
  }
  torch::nn::Linear fc{nullptr};
  torch::Tensor calls;
};
TORCH_MODULE(Toy);

// `per_epoch` batches of 8 samples, each a fixed function of (epoch, index).
class ToyBatches : public BatchSource {
 public:
  explicit ToyBatches(int64_t per_epoch) : per_epoch_(per_epoch) {}
  int64_t size() const override { return per_epoch_ * 8; }
  int64_t batches_per_epoch() const override { return per_epoch_; }
  void start_epoch(int64_t epoch, int64_t first) override {
    epoch_ = epoch;
    next_ = first;
  }
  std::optional<data::Batch> next() override {
    if (next_ >= per_epoch_) return std::nullopt;
    auto g = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(epoch_ * 1000 + next_));
    data::Batch b;
    b.images = {torch::randn({8, 4}, g)};
    b.indices = torch::arange(8);
    b.epoch = epoch_;
    b.step = next_++;
    return b;
  }

 private:
  int64_t per_epoch_, epoch_ = 0, next_ = 0;
};

struct Calls {
  std::vector<int64_t> started, evaluated;
  int64_t forwards = 0, finishes = 0, updates = 0;
};

class ToyTrainer : public Trainer {
 public:
  ToyTrainer(std::filesystem::path out, int64_t per_epoch, std::set<int64_t> nan_forwards, Calls* calls)
      : out_(std::move(out)), batches_(per_epoch), nan_(std::move(nan_forwards)), calls_(calls) {
    ema_ = std::make_unique<ModelEma>(Toy().ptr(), *model_, 0.5);  // before the seed: the global stream is the
    torch::manual_seed(0);                                          // same as without it
    groups_ = make_param_groups(*model_, 0.0, {});
    opt_ = make_adamw(groups_, 0.1, 0.9, 0.999, 1e-8);
  }
  torch::nn::Module& model() override { return *model_; }
  torch::optim::AdamW& optimizer() override { return *opt_; }
  const std::vector<ParamGroup>& param_groups() const override { return groups_; }
  BatchSource& batches() override { return batches_; }
  LossOutput forward_loss(const data::Batch& b) override {
    {
      torch::NoGradGuard ng;
      model_->calls.add_(1);  // a forward-time buffer update, like the codebook's EMA
    }
    const auto& x = b.images.at(0);
    auto y = x.matmul(torch::tensor({1.0f, -2.0f, 0.5f, 3.0f})).unsqueeze(1);
    auto loss = torch::mse_loss(model_->fc(x), y);
    if (nan_.count(calls_->forwards++)) loss = loss * std::numeric_limits<float>::quiet_NaN();
    return {loss, {{"half_loss", loss.detach() / 2}}};
  }
  void after_update() override {
    ++calls_->updates;
    ema_->update(*model_);
  }
  TensorMap extra_state() const override { return ema_->state(); }
  void load_extra_state(const TensorMap& t) override { ema_->load(t, "toy extra state"); }
  void start_epoch(int64_t epoch) override { calls_->started.push_back(epoch); }
  nlohmann::json evaluate(int64_t epoch) override {
    calls_->evaluated.push_back(epoch);
    return {{"val_metric", static_cast<double>(epoch)}};
  }
  std::vector<std::filesystem::path> outputs() const override { return {out_ / "final.txt"}; }
  std::vector<std::filesystem::path> finish(int64_t step) override {
    ++calls_->finishes;
    write_file_atomic(out_ / "final.txt", std::to_string(step));
    return outputs();
  }
  Toy model_;
  std::unique_ptr<ModelEma> ema_;

 private:
  std::filesystem::path out_;
  ToyBatches batches_;
  std::set<int64_t> nan_;
  Calls* calls_;
  std::vector<ParamGroup> groups_;
  std::unique_ptr<torch::optim::AdamW> opt_;
};

struct ToyRun {
  test::TempDir dir{"loop"};
  OptimConfig optim;
  TrainConfig train;
  int64_t per_epoch = 4;
  std::set<int64_t> nan_forwards;
  Calls calls;
  std::string config_extra;

  ToyRun() {
    optim.lr = 0.1;
    optim.scale_lr = false;
    optim.warmup_steps = 0;
    optim.min_lr = 0;
    train.steps = 10;
    train.log_every = 3;
    train.save_every = 4;
    train.keep_last = 10;
    train.threads = 1;
    train.out_dir = (dir.path() / "run").string();
  }
  std::filesystem::path run() const { return dir.path() / "run"; }
  RunSpec spec() const {
    return {.name = "toy", .config_yaml = "model:\n  width: 4\ndata:\n  batch_size: 8\n" + config_extra +
                                          "optim:\n  lr: " + std::to_string(optim.lr) + "\n",
            .optim = &optim, .train = &train, .batch_per_process = 8};
  }
  LoopSummary go(const LoopOptions& o = {}) {
    return run_training(spec(), [&] { return std::make_unique<ToyTrainer>(run(), per_epoch, nan_forwards, &calls); },
                        o);
  }
  std::vector<nlohmann::json> metrics() const {
    std::vector<nlohmann::json> out;
    std::ifstream in(run() / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  std::vector<int64_t> window_steps() const {
    std::vector<int64_t> s;
    for (const auto& r : metrics()) {
      if (r.contains("loss") || r.contains("skipped_in_window")) s.push_back(r["step"]);
    }
    return s;
  }
};

TEST(Loop, CadenceOfWindowsEvaluationsAndCheckpoints) {
  ToyRun t;
  auto s = t.go();
  ASSERT_TRUE(s.finished);
  EXPECT_EQ(s.steps, 10);
  // Windows: the first step alone, then at multiples of log_every (3), and the end.
  EXPECT_EQ(t.window_steps(), (std::vector<int64_t>{1, 3, 6, 9, 10}));
  EXPECT_EQ(t.calls.started, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(t.calls.evaluated, (std::vector<int64_t>{0, 1, 2}));  // epoch 2 is cut short by the end: evaluated too
  EXPECT_EQ(t.calls.finishes, 1);
  std::set<std::string> steps;
  for (const auto& e : std::filesystem::directory_iterator(t.run() / "checkpoints")) steps.insert(e.path().filename());
  EXPECT_EQ(steps, (std::set<std::string>{"latest", "step_4", "step_8", "step_10"}));
  // Every window record is a number, the first window is the first step's loss.
  for (const auto& r : t.metrics()) {
    if (!r.contains("loss")) continue;
    EXPECT_TRUE(std::isfinite(r["loss"].get<double>()));
    EXPECT_NEAR(r["half_loss"].get<double>(), r["loss"].get<double>() / 2, 1e-6);
  }
  EXPECT_EQ(s.first_window["step"], 1);
  EXPECT_LT(s.last_window["loss"].get<double>(), s.first_window["loss"].get<double>()) << "the toy regression learns";
}

TEST(Loop, DrawsCurvesAfterEvaluationsAndOnStop) {
  ToyRun t;
  t.go({.resume = "", .stop_after = 2});  // no evaluation yet: drawn at the stop
  const auto png = t.run() / "plots/curves.png";
  ASSERT_TRUE(std::filesystem::exists(png));
  std::filesystem::remove(png);
  t.go({.resume = "auto"});
  EXPECT_TRUE(std::filesystem::exists(png));
}

TEST(Loop, AFigureThatCannotBeWrittenIsOnlyAWarning) {
  ToyRun t;
  std::filesystem::create_directories(t.run() / "plots/curves.png/blocker");  // a folder where the PNG goes
  const auto s = t.go();
  EXPECT_TRUE(s.finished);
  EXPECT_NE(read_file(t.run() / "log.txt").find("could not draw plots/curves.png"), std::string::npos);
}

TEST(Loop, EvaluatesEveryKEpochsAndAtTheEnd) {
  ToyRun t;
  t.train.steps = 18;  // epochs 0..4, the last one cut short
  t.train.eval_every = 2;
  t.go();
  EXPECT_EQ(t.calls.evaluated, (std::vector<int64_t>{1, 3, 4}));
}

TEST(Loop, WindowsCloseByTimeToo) {
  ToyRun t;
  t.train.log_every = 1000;
  t.train.log_seconds = 1e-9;
  t.go();
  EXPECT_EQ(t.window_steps().size(), 10u);
}

TEST(Loop, ASkippedStepChangesNothing) {
  ToyRun t;
  Calls calls;
  ToyTrainer tr(t.run(), 4, {1}, &calls);
  ToyBatches src(4);
  src.start_epoch(0, 0);
  auto b0 = *src.next(), b1 = *src.next();
  ASSERT_FALSE(train_step(tr, b0, 0.1, 0, t.optim, t.train).skipped);
  EXPECT_EQ(calls.updates, 1);
  auto before = state_dict(*tr.model_);
  std::map<std::string, torch::Tensor> copy, ema_copy;
  for (const auto& [k, v] : before) copy[k] = v.clone();
  for (const auto& [k, v] : tr.ema_->state()) ema_copy[k] = v.clone();
  auto adam_before = static_cast<torch::optim::AdamWParamState&>(
                         *tr.optimizer().state().at(tr.model_->fc->weight.unsafeGetTensorImpl()))
                         .exp_avg()
                         .clone();
  auto st = train_step(tr, b1, 0.1, 0, t.optim, t.train);  // forward call 1 is NaN
  EXPECT_TRUE(st.skipped);
  EXPECT_TRUE(std::isnan(st.loss));
  for (const auto& [k, v] : state_dict(*tr.model_)) EXPECT_TRUE(torch::equal(v, copy.at(k))) << k;
  EXPECT_EQ(calls.updates, 1) << "no after_update for a skipped step";
  for (const auto& [k, v] : tr.ema_->state()) EXPECT_TRUE(torch::equal(v, ema_copy.at(k))) << "EMA " << k;
  auto adam_after = static_cast<torch::optim::AdamWParamState&>(
                        *tr.optimizer().state().at(tr.model_->fc->weight.unsafeGetTensorImpl()))
                        .exp_avg();
  EXPECT_TRUE(torch::equal(adam_before, adam_after));
  EXPECT_FALSE(tr.model_->fc->weight.grad().defined() && tr.model_->fc->weight.grad().abs().sum().item<double>() > 0);
}

TEST(Loop, NonFiniteStreakStopsTheRunWithoutCheckpointingInsideIt) {
  ToyRun t;
  t.train.max_nonfinite = 3;
  t.train.save_every = 1;
  t.train.log_every = 1;
  t.nan_forwards = {2, 3, 4, 5};  // steps 3, 4, 5 (and 6) are NaN: the streak of 3 ends the run at step 5
  try {
    t.go();
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("3 consecutive non-finite"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("step_2 is intact"), std::string::npos) << e.what();
  }
  CheckpointManager ckpt(t.run(), 10);
  ASSERT_TRUE(ckpt.latest());
  EXPECT_EQ(ckpt.latest()->filename(), "step_2");
  // The all-skipped window at step 4 (epoch end) is reported as skipped, never as a number.
  bool saw_skipped = false;
  for (const auto& r : t.metrics()) {
    if (r.contains("skipped_in_window")) {
      saw_skipped = true;
      EXPECT_FALSE(r.contains("loss"));
    }
  }
  EXPECT_TRUE(saw_skipped);
}

TEST(Loop, AStopOnAnEpochsLastStepStillEvaluatesIt) {
  ToyRun t;
  auto s = t.go({.resume = "", .stop_after = 4});
  EXPECT_FALSE(s.finished);
  EXPECT_EQ(t.calls.evaluated, (std::vector<int64_t>{0}));
  auto r = t.go({.resume = "auto"});
  EXPECT_TRUE(r.finished);
  EXPECT_EQ(t.calls.evaluated, (std::vector<int64_t>{0, 1, 2}));  // epoch 0 not evaluated twice
}

TEST(Loop, ResumeIsBitIdenticalToAStraightRun) {
  ToyRun a, b;
  a.go();
  b.go({.resume = "", .stop_after = 6});
  b.go({.resume = "auto"});
  EXPECT_EQ(read_file(a.run() / "checkpoints/step_10/model.safetensors"),
            read_file(b.run() / "checkpoints/step_10/model.safetensors"));
  // The EMA (extra state) too: restored on resume, not restarted from the weights.
  EXPECT_EQ(read_file(a.run() / "checkpoints/step_10/extra.safetensors"),
            read_file(b.run() / "checkpoints/step_10/extra.safetensors"));
  EXPECT_NE(read_file(a.run() / "checkpoints/step_10/extra.safetensors"),
            read_file(b.run() / "checkpoints/step_6/extra.safetensors"));
  EXPECT_EQ(read_file(a.run() / "final.txt"), read_file(b.run() / "final.txt"));
}

TEST(Loop, AFinishedRunResumedIsANoOp) {
  ToyRun t;
  t.go();
  const auto metrics = read_file(t.run() / "metrics.jsonl");
  const auto mtime = std::filesystem::last_write_time(t.run() / "final.txt");
  auto s = t.go({.resume = "auto"});
  EXPECT_TRUE(s.already_finished);
  EXPECT_EQ(t.calls.finishes, 1);
  EXPECT_EQ(read_file(t.run() / "metrics.jsonl"), metrics);
  EXPECT_EQ(std::filesystem::last_write_time(t.run() / "final.txt"), mtime);
  // Without its output, the finished run only writes the output again.
  std::filesystem::remove(t.run() / "final.txt");
  s = t.go({.resume = "auto"});
  EXPECT_FALSE(s.already_finished);
  EXPECT_EQ(t.calls.finishes, 2);
  EXPECT_EQ(read_file(t.run() / "final.txt"), "10");
}

TEST(Loop, MissingLatestFallsBackToTheNewestStepOrRefusesAFreshRun) {
  ToyRun t;
  t.go({.resume = "", .stop_after = 8});
  std::filesystem::remove(t.run() / "checkpoints/latest");
  try {
    t.go();  // a fresh run must not overwrite and prune the old checkpoints
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("already holds checkpoints"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::filesystem::exists(t.run() / "checkpoints/step_4"));
  auto s = t.go({.resume = "auto"});
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(t.calls.evaluated, (std::vector<int64_t>{0, 1, 2}));  // resumed at step 8, not from scratch
}

TEST(Loop, DamagedCheckpointsAreNeverLoaded) {
  ToyRun t;
  t.go({.resume = "", .stop_after = 8});
  CheckpointManager ckpt(t.run(), 10);
  // Flip one byte in the newest checkpoint's weights: verification fails, the resume falls back to step_4.
  {
    const auto f = t.run() / "checkpoints/step_8/model.safetensors";
    std::string bytes = read_file(f);
    bytes[bytes.size() - 3] ^= 0x40;
    std::ofstream(f, std::ios::binary) << bytes;
  }
  EXPECT_THROW(ckpt.verify(t.run() / "checkpoints/step_8"), CheckpointError);
  EXPECT_EQ(ckpt.newest_verified()->filename(), "step_4");
  // The optional extra state is in the manifest and checked the same way.
  {
    const auto f = t.run() / "checkpoints/step_4/extra.safetensors";
    const std::string good = read_file(f);
    std::string bytes = good;
    bytes[bytes.size() - 2] ^= 0x10;
    std::ofstream(f, std::ios::binary) << bytes;
    try {
      ckpt.verify(t.run() / "checkpoints/step_4");
      FAIL() << "no error";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("extra.safetensors: CRC-32 differs"), std::string::npos) << e.what();
    }
    std::ofstream(f, std::ios::binary) << good;
    EXPECT_NO_THROW(ckpt.verify(t.run() / "checkpoints/step_4"));
  }
  // An implausible step in the manifest is an error too.
  {
    const auto f = t.run() / "checkpoints/step_4/trainer.json";
    auto meta = nlohmann::json::parse(read_file(f));
    meta["step"] = 999999;
    std::ofstream(f) << meta.dump();
  }
  try {
    ckpt.verify(t.run() / "checkpoints/step_4");
    FAIL() << "no error";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("implausible step 999999"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.go({.resume = "auto"}), CheckpointError);  // none verifies: refuse rather than start over
}

TEST(Loop, ResumeRefusesRunBreakingConfigChangesAndKeepsTheHistory) {
  ToyRun t;
  t.go({.resume = "", .stop_after = 4});
  const auto original = read_file(t.run() / "config.yaml");
  t.config_extra = "train:\n  seed: 7\n";
  try {
    t.go({.resume = "auto"});
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.seed: (absent) -> 7"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(t.run() / "config.yaml"), original) << "a refused resume must not touch config.yaml";
  t.config_extra.clear();
  t.optim.lr = 0.05;  // allowed: logged
  auto s = t.go({.resume = "auto", .stop_after = 2});
  EXPECT_EQ(s.steps, 6);
  EXPECT_EQ(read_file(t.run() / "config.1.yaml"), original);
  EXPECT_NE(read_file(t.run() / "log.txt").find("resume: config changed: optim.lr"), std::string::npos);
  t.config_extra = "train:\n  seed: 7\n";
  EXPECT_TRUE(t.go({.resume = "auto", .force_resume = true}).finished);
}

TEST(Loop, TheRunDirectoryIsLocked) {
  ToyRun t;
  RunDir holder(t.run());
  try {
    t.go();
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another trainer (pid " + std::to_string(::getpid())),
              std::string::npos)
        << e.what();
  }
}

TEST(Loop, WarnsWhenWarmupOutlastsTheRun) {
  ToyRun t;
  t.optim.warmup_steps = 50;
  t.go();
  EXPECT_NE(read_file(t.run() / "log.txt").find("warmup (50 steps) is as long as the run (10 steps)"),
            std::string::npos);
}

}  // namespace
}  // namespace beitv2
