// The threaded loader: identical batches whatever the worker count, sharding as DistributedSampler,
// worker errors naming the file, clean stops, refused threads.
#include "data_helpers.h"

namespace beitv2 {
namespace {

using namespace beitv2::test;

// ---------------------------------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------------------------------

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch, int64_t first_step = 0) {
  std::vector<Batch> out;
  loader.start_epoch(epoch, first_step);
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t s = 0; s < a.size(); ++s) {
    ASSERT_EQ(a[s].images.size(), b[s].images.size()) << what;
    for (size_t v = 0; v < a[s].images.size(); ++v) {
      EXPECT_TRUE(torch::equal(a[s].images[v], b[s].images[v])) << what << " step " << s << " view " << v;
    }
    EXPECT_TRUE(torch::equal(a[s].labels, b[s].labels)) << what << " step " << s;
    EXPECT_TRUE(torch::equal(a[s].indices, b[s].indices)) << what << " step " << s;
    EXPECT_EQ(a[s].masks.defined(), b[s].masks.defined());
    if (a[s].masks.defined()) {
      EXPECT_TRUE(torch::equal(a[s].masks, b[s].masks)) << what << " step " << s;
    }
    EXPECT_EQ(a[s].step, b[s].step);
  }
}

TEST(DataLoader, IdenticalBatchesWhateverTheWorkerCount) {
  test::TempDir tmp("determinism");
  auto ds = std::make_shared<const ImageDataset>(ImageDataset::image_folder(make_image_folder(tmp.path(), 8)));
  TwoViewTransform two;
  two.size = 16;
  two.second_size = 8;
  two.second_interpolation = cv::INTER_LANCZOS4;
  MaskingOptions mo;
  mo.height = mo.width = 4;
  mo.num_masking_patches = 6;
  mo.min_num_patches = 2;
  TrainTransform one;
  one.crop.size = 12;
  one.jitter = {0.4, 0.4, 0.4};
  FinetuneTransform ft;
  ft.crop.size = 12;
  const std::vector<std::pair<std::string, SampleFn>> fns{
      {"pretrain", pretrain_sample_fn(ds, two, MaskingGenerator(mo))},
      {"train", train_sample_fn(ds, one)},
      {"finetune", finetune_sample_fn(ds, ft)}};
  for (const auto& [name, fn] : fns) {
    LoaderOptions o;
    o.batch_size = 5;
    o.drop_last = false;
    o.seed = 3;
    o.num_workers = 1;
    o.prefetch_batches = 1;
    Loader l1(ds->size(), fn, o);
    const auto ref0 = run_epoch(l1, 0), ref1 = run_epoch(l1, 1);
    ASSERT_EQ(ref0.size(), 5u);  // 24 samples in batches of 5, the last short
    EXPECT_EQ(ref0.back().size(), 4);
    ASSERT_EQ(ref0[0].images.size(), name == "pretrain" ? 2u : 1u);
    const int64_t side = name == "pretrain" ? 16 : 12;
    EXPECT_EQ(ref0[0].images[0].sizes(), torch::IntArrayRef({5, 3, side, side}));
    EXPECT_EQ(ref0[0].images[0].scalar_type(), torch::kUInt8);
    if (name == "pretrain") {
      EXPECT_EQ(ref0[0].images[1].sizes(), torch::IntArrayRef({5, 3, 8, 8}));
      EXPECT_EQ(ref0[0].masks.sizes(), torch::IntArrayRef({5, 16}));
      EXPECT_TRUE(ref0[0].masks.sum(1).eq(6).all().item<bool>());
    } else {
      EXPECT_FALSE(ref0[0].masks.defined());
    }
    EXPECT_FALSE(torch::equal(ref0[0].indices, ref1[0].indices)) << "epochs are shuffled differently";
    for (int workers : {2, 3}) {
      o.num_workers = workers;
      o.prefetch_batches = 2;
      Loader l(ds->size(), fn, o);
      expect_same_batches(run_epoch(l, 0), ref0, c10::str(name, ", ", workers, " workers, epoch 0"));
      expect_same_batches(run_epoch(l, 1), ref1, c10::str(name, ", ", workers, " workers, epoch 1"));
    }
    // Resuming mid-epoch gives the rest of the same epoch.
    o.num_workers = 2;
    Loader resumed(ds->size(), fn, o);
    const auto tail = run_epoch(resumed, 1, 2);
    expect_same_batches(tail, std::vector<Batch>(ref1.begin() + 2, ref1.end()), name + ", resumed at step 2");
  }
  // Labels come from the dataset.
  LoaderOptions o;
  o.batch_size = 24;
  Loader l(ds->size(), train_sample_fn(ds, one), o);
  const auto all = run_epoch(l, 0);
  for (int64_t i = 0; i < 24; ++i) {
    EXPECT_EQ(all[0].labels[i].item<int64_t>(), ds->label(all[0].indices[i].item<int64_t>()));
  }
}

/// A sample function without images work: a 1x1 view holding the index.
Sample tiny_sample(int64_t i, Rng&) {
  Sample s;
  s.views = {cv::Mat(1, 1, CV_8UC3, cv::Scalar(static_cast<double>(i % 256), 0, 0))};
  s.label = i;
  return s;
}

TEST(DataLoader, ShardingCoversTheDatasetOncePerEpoch) {
  for (const int64_t n : {100, 103}) {
    for (const bool drop_tail : {false, true}) {
      const int64_t world = 4;
      std::vector<int64_t> seen;
      std::set<int64_t> per_rank_counts;
      for (int64_t rank = 0; rank < world; ++rank) {
        LoaderOptions o;
        o.batch_size = 8;
        o.drop_last = false;
        o.world_size = world;
        o.rank = rank;
        o.seed = 11;
        o.shard_drop_tail = drop_tail;
        Loader l(n, tiny_sample, o);
        int64_t mine = 0;
        for (const auto& b : run_epoch(l, 2)) {
          for (int64_t i = 0; i < b.size(); ++i) seen.push_back(b.indices[i].item<int64_t>());
          mine += b.size();
        }
        EXPECT_EQ(mine, l.samples_per_rank());
        per_rank_counts.insert(mine);
      }
      EXPECT_EQ(per_rank_counts.size(), 1u) << "equal counts per rank";
      const std::set<int64_t> distinct(seen.begin(), seen.end());
      if (!drop_tail) {
        EXPECT_EQ(static_cast<int64_t>(distinct.size()), n) << "every sample visited (n " << n << ")";
        EXPECT_EQ(static_cast<int64_t>(seen.size()), (n + world - 1) / world * world) << "padding by wrapping";
      } else {
        EXPECT_EQ(static_cast<int64_t>(seen.size()), n / world * world);
        EXPECT_EQ(distinct.size(), seen.size()) << "no sample twice";
      }
      if (n % world == 0) {
        EXPECT_EQ(distinct.size(), seen.size()) << "n divisible: each sample exactly once";
      }
    }
  }
  // drop_last drops each rank's short final batch.
  LoaderOptions o;
  o.batch_size = 8;
  o.world_size = 4;
  Loader l(103, tiny_sample, o);
  EXPECT_EQ(l.samples_per_rank(), 26);
  EXPECT_EQ(l.batches_per_epoch(), 3);
  EXPECT_EQ(run_epoch(l, 0).size(), 3u);
}

TEST(DataLoader, OrderMatchesTorchDistributedSampler) {
  // The epoch order is torch.randperm(n) seeded with seed + epoch, padded and strided as DistributedSampler.
  // Needs a python with torch (the build env); skipped otherwise.
  const char* py = std::getenv("BEITV2_BUILD_PYTHON");
  const char* home = std::getenv("HOME");
  std::string exe = (fs::path(home ? home : "") / ".cache/beitv2/build-env/bin/python").string();
  if (py && fs::exists(py)) exe = py;
  if (!fs::exists(exe)) GTEST_SKIP() << "no build-env python with torch (BEITV2_BUILD_PYTHON)";
  test::TempDir tmp("sampler");
  const auto out = tmp.path() / "order.txt";
  const std::string cmd = exe +
                          " -c \"import torch.utils.data as d; s = d.DistributedSampler(range(103), num_replicas=4, "
                          "rank=1, shuffle=True, seed=11); s.set_epoch(5); print(' '.join(map(str, s)))\" > " +
                          out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(out);
  std::vector<int64_t> expected{std::istream_iterator<int64_t>(f), {}};
  LoaderOptions o;
  o.world_size = 4;
  o.rank = 1;
  o.seed = 11;
  Loader l(103, tiny_sample, o);
  EXPECT_EQ(l.epoch_indices(5), expected);
}

TEST(DataLoader, WorkerExceptionReachesTheCallerNamingTheFile) {
  auto fn = [](int64_t i, Rng& rng) {
    if (i == 7) throw std::runtime_error("/data/train/cls/file_0007.png: something broke");
    return tiny_sample(i, rng);
  };
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.num_workers = 3;
  Loader l(40, fn, o);
  l.start_epoch(0);
  try {
    while (l.next()) {
    }
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("file_0007.png"), std::string::npos) << e.what();
  }
  // The loader can start again after an error (the error is cleared by start_epoch) and still reports it.
  l.start_epoch(0);
  EXPECT_THROW(
      {
        while (l.next()) {
        }
      },
      std::runtime_error);
  // Invalid transform settings are rejected when the pipeline is built, before any work.
  test::TempDir tmp("transform_error");
  write_rgb(tmp.path() / "tiny.png", random_rgb(4, 4, 1));
  auto ds = std::make_shared<const ImageDataset>(ImageDataset::folder(tmp.path()));
  TwoViewTransform two;
  two.size = 0;
  EXPECT_THROW(pretrain_sample_fn(ds, two, MaskingGenerator(MaskingOptions{})), ConfigError);
  TrainTransform area;
  area.crop.interpolation = cv::INTER_AREA;  // not one of Pillow's filters
  EXPECT_THROW(train_sample_fn(ds, area), ConfigError);
}

TEST(DataLoader, StopsCleanlyMidEpoch) {
  std::atomic<int> calls{0};
  auto slow = [&](int64_t i, Rng& rng) {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return tiny_sample(i, rng);
  };
  LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 3;
  o.prefetch_batches = 2;
  const auto t0 = std::chrono::steady_clock::now();
  {
    Loader l(1000, slow, o);
    l.start_epoch(0);
    ASSERT_TRUE(l.next().has_value());
    l.start_epoch(1);  // abandon epoch 0 mid-way
    ASSERT_TRUE(l.next().has_value());
  }  // destructor: joins the workers with most of the epoch left
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(calls.load(), 100) << "prefetch is bounded";
  EXPECT_LT(s, 5.0);
  Loader idle(10, tiny_sample, o);  // never started: destroyed at once
  EXPECT_THROW(idle.next(), c10::Error);
  LoaderOptions bad;
  bad.rank = 4;
  bad.world_size = 4;
  EXPECT_THROW(Loader(10, tiny_sample, bad), ConfigError);
  EXPECT_THROW(Loader(0, tiny_sample, LoaderOptions{}), ConfigError);
}

TEST(DataLoader, ThreadsTheSystemRefusesAreAnErrorNotAnAbort) {
  LoaderOptions o;
  o.num_workers = 30000;
  EXPECT_THROW(Loader(10, tiny_sample, o), ConfigError);  // far past any machine: refused up front
  // Thread creation failing half-way used to leave the started threads joinable: std::terminate. A child process
  // whose address space has room for a few thread stacks only asks for 1000 workers.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto child = [] {
    long vm_kb = 0;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stol(line.substr(7));
    }
    rlimit lim{};
    getrlimit(RLIMIT_AS, &lim);
    lim.rlim_cur = static_cast<rlim_t>(vm_kb + 256 * 1024) * 1024;  // 256 MB more than now
    setrlimit(RLIMIT_AS, &lim);
    LoaderOptions many;
    many.num_workers = 1000;
    try {
      Loader l(10, tiny_sample, many);
      std::fprintf(stderr, "all 1000 threads started\n");
      std::_Exit(3);
    } catch (const std::runtime_error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      std::_Exit(std::string(e.what()).find("loader: cannot start 1000 worker threads") == 0 ? 0 : 2);
    }
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "loader: cannot start 1000 worker threads \\([0-9]+ started");
}

}  // namespace
}  // namespace beitv2
