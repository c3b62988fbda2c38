#include "beitv2/data/loader.h"

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <opencv2/core.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <atomic>
#include <cstring>
#include <system_error>

#include "beitv2/core/config_yaml.h"
#include "beitv2/core/log.h"

namespace beitv2::data {

void LoaderOptions::validate() const {
  auto bad = [](const std::string& m) { throw ConfigError("loader: " + m); };
  if (batch_size < 1) bad(c10::str("batch_size = ", batch_size, " must be >= 1"));
  if (num_workers < 1 || num_workers > kMaxWorkers) {
    bad(c10::str("num_workers = ", num_workers, " outside [1, ", kMaxWorkers, "]"));
  }
  if (prefetch_batches < 1) bad(c10::str("prefetch_batches = ", prefetch_batches, " must be >= 1"));
  if (world_size < 1) bad(c10::str("world_size = ", world_size, " must be >= 1"));
  if (rank < 0 || rank >= world_size) bad(c10::str("rank = ", rank, " outside [0, ", world_size, ")"));
  if (max_skip_run < 1) bad(c10::str("max_skip_run = ", max_skip_run, " must be >= 1"));
}

/// One batch being filled: samples written by position, the last writer assembles the batch.
struct Loader::Slot {
  std::vector<Sample> samples;
  std::vector<int64_t> indices;
  std::atomic<int64_t> remaining{0};
  bool ready = false;
  Batch batch;
};

Loader::Loader(int64_t dataset_size, SampleFn fn, LoaderOptions options)
    : dataset_size_(dataset_size), fn_(std::move(fn)), options_(options) {
  options_.validate();
  if (dataset_size_ < 1) throw ConfigError("loader: the dataset is empty");
  TORCH_CHECK(fn_, "Loader: no sample function");
  pin_ = options_.pin_memory && torch::cuda::is_available();
  workers_.reserve(static_cast<size_t>(options_.num_workers));
  try {
    for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (const std::system_error& e) {
    // The destructor does not run for a constructor that throws: join the threads started so far, or their
    // std::thread destructors would terminate the process.
    const size_t started = workers_.size();
    stop_workers();
    throw std::runtime_error(c10::str("loader: cannot start ", options_.num_workers, " worker threads (", started,
                                      " started: ", e.what(), "); use fewer data workers"));
  }
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

Loader::~Loader() { stop_workers(); }

int64_t Loader::samples_per_rank() const {
  const int64_t n = dataset_size_, w = options_.world_size;
  return options_.shard_drop_tail ? n / w : (n + w - 1) / w;
}

int64_t Loader::batches_per_epoch() const {
  const int64_t s = samples_per_rank(), b = options_.batch_size;
  return options_.drop_last ? s / b : (s + b - 1) / b;
}

std::vector<int64_t> Loader::epoch_indices(int64_t epoch) const {
  const int64_t n = dataset_size_, w = options_.world_size;
  std::vector<int64_t> all(static_cast<size_t>(n));
  if (options_.shuffle) {
    // torch.utils.data.DistributedSampler: g.manual_seed(seed + epoch); torch.randperm(n, generator=g).
    auto gen = at::detail::createCPUGenerator(options_.seed + static_cast<uint64_t>(epoch));
    const auto perm = torch::randperm(n, gen, torch::kLong);
    std::memcpy(all.data(), perm.data_ptr<int64_t>(), sizeof(int64_t) * static_cast<size_t>(n));
  } else {
    for (int64_t i = 0; i < n; ++i) all[i] = i;
  }
  const int64_t per_rank = samples_per_rank();
  const int64_t total = per_rank * w;
  // Pad by repeating the list from its start (DistributedSampler), or keep the first `total`.
  for (int64_t i = n; i < total; ++i) all.push_back(all[static_cast<size_t>((i - n) % n)]);
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(per_rank));
  for (int64_t i = options_.rank; i < total; i += w) mine.push_back(all[static_cast<size_t>(i)]);
  return mine;
}

int64_t Loader::batch_length(int64_t step) const {
  const int64_t b = options_.batch_size;
  return std::min(b, static_cast<int64_t>(order_.size()) - step * b);
}

void Loader::start_epoch(int64_t epoch, int64_t first_step) {
  TORCH_CHECK(first_step >= 0 && first_step <= batches_per_epoch(), "Loader::start_epoch: first_step ", first_step,
              " outside [0, ", batches_per_epoch(), "]");
  auto order = epoch_indices(epoch);
  std::unique_lock<std::mutex> lk(mu_);
  running_ = false;  // workers take no new items; wait for those in flight, then drop the old epoch
  ready_cv_.wait(lk, [&] { return in_flight_ == 0; });
  slots_.clear();
  error_ = nullptr;
  epoch_ = epoch;
  order_ = std::move(order);
  consumed_ = first_step;
  next_item_ = first_step * options_.batch_size;
  end_item_ = std::min(static_cast<int64_t>(order_.size()), batches_per_epoch() * options_.batch_size);
  running_ = true;
  lk.unlock();
  work_cv_.notify_all();
}

Sample Loader::make_sample(int64_t index, int64_t epoch, int64_t* used_index) {
  // Decode policy "skip": an unreadable file is replaced by the next dataset index that decodes; the
  // replacement is made with the original index's generator, so the result is still a function of
  // (seed, epoch, index) only.
  std::string first_failure;
  for (int attempt = 0; attempt < options_.max_skip_run; ++attempt) {
    const int64_t i = (index + attempt) % dataset_size_;
    Rng rng = Rng::for_sample(options_.seed, epoch, index);
    try {
      Sample s = fn_(i, rng);
      *used_index = i;
      return s;
    } catch (const DecodeError& e) {
      if (options_.decode_policy == DecodePolicy::kFail) throw;
      bool first = false;
      {
        std::lock_guard<std::mutex> lk(mu_);
        first = skipped_.insert(e.what()).second;
      }
      if (first) log::warn(c10::str("skipping unreadable image: ", e.what()));
      if (first_failure.empty()) first_failure = e.what();
    }
  }
  throw DecodeError(c10::str(options_.max_skip_run, " unreadable images in a row from dataset index ", index,
                             " (first: ", first_failure, ")"));
}

Batch Loader::assemble(std::vector<Sample>& samples, const std::vector<int64_t>& indices, int64_t epoch,
                       int64_t step) const {
  const auto B = static_cast<int64_t>(samples.size());
  Batch batch;
  batch.epoch = epoch;
  batch.step = step;
  const size_t views = samples[0].views.size();
  TORCH_CHECK(views > 0, "Loader: sample ", indices[0], " has no image");
  auto opts = torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pin_);
  for (size_t v = 0; v < views; ++v) {
    const cv::Mat& first = samples[0].views[v];
    const int H = first.rows, W = first.cols;
    auto t = torch::empty({B, 3, H, W}, opts);
    uint8_t* base = t.data_ptr<uint8_t>();
    const size_t plane = static_cast<size_t>(H) * W;
    for (int64_t i = 0; i < B; ++i) {
      TORCH_CHECK(samples[i].views.size() == views, "Loader: sample ", indices[i], " has ",
                  samples[i].views.size(), " views, sample ", indices[0], " has ", views);
      const cv::Mat& m = samples[i].views[v];
      TORCH_CHECK(m.type() == CV_8UC3 && m.rows == H && m.cols == W, "Loader: view ", v, " of sample ", indices[i],
                  " is ", m.cols, "x", m.rows, " (type ", m.type(), "), expected ", W, "x", H, " uint8 RGB");
      uint8_t* dst = base + static_cast<size_t>(i) * 3 * plane;
      std::vector<cv::Mat> planes{cv::Mat(H, W, CV_8UC1, dst), cv::Mat(H, W, CV_8UC1, dst + plane),
                                  cv::Mat(H, W, CV_8UC1, dst + 2 * plane)};
      cv::split(m, planes);  // HWC -> CHW into the batch
    }
    batch.images.push_back(std::move(t));
  }
  batch.labels = torch::empty({B}, torch::kLong);
  batch.indices = torch::empty({B}, torch::kLong);
  for (int64_t i = 0; i < B; ++i) {
    batch.labels.data_ptr<int64_t>()[i] = samples[i].label;
    batch.indices.data_ptr<int64_t>()[i] = indices[i];
  }
  if (samples[0].mask.defined()) {
    const int64_t N = samples[0].mask.numel();
    batch.masks = torch::empty({B, N}, torch::kBool);
    for (int64_t i = 0; i < B; ++i) {
      const auto& m = samples[i].mask;
      TORCH_CHECK(m.defined() && m.numel() == N && m.scalar_type() == torch::kBool, "Loader: sample ", indices[i],
                  " mask differs from sample ", indices[0], "'s bool (", N, ")");
      std::memcpy(batch.masks.data_ptr<bool>() + i * N, m.contiguous().data_ptr<bool>(), static_cast<size_t>(N));
    }
  }
  return batch;
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    const int64_t B = options_.batch_size;
    work_cv_.wait(lk, [&] {
      return stop_ || (running_ && !error_ && next_item_ < end_item_ &&
                       next_item_ / B < consumed_ + options_.prefetch_batches);
    });
    if (stop_) return;
    const int64_t item = next_item_++;
    const int64_t step = item / B, pos = item % B;
    auto& slot_ptr = slots_[step];
    if (!slot_ptr) {
      slot_ptr = std::make_unique<Slot>();
      const int64_t len = batch_length(step);
      slot_ptr->samples.resize(static_cast<size_t>(len));
      slot_ptr->indices.assign(static_cast<size_t>(len), -1);
      slot_ptr->remaining = len;
    }
    Slot* slot = slot_ptr.get();
    const int64_t index = order_[static_cast<size_t>(item)];
    const int64_t epoch = epoch_;
    ++in_flight_;
    lk.unlock();

    std::exception_ptr err;
    bool complete = false;
    try {
      int64_t used = index;
      slot->samples[static_cast<size_t>(pos)] = make_sample(index, epoch, &used);
      slot->indices[static_cast<size_t>(pos)] = used;
      if (--slot->remaining == 0) {
        complete = true;
        slot->batch = assemble(slot->samples, slot->indices, epoch, step);
        slot->samples.clear();
      }
    } catch (...) {
      err = std::current_exception();
    }

    lk.lock();
    --in_flight_;
    if (err && !error_) error_ = err;
    if (complete && !err) slot->ready = true;
    ready_cv_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  std::unique_lock<std::mutex> lk(mu_);
  TORCH_CHECK(running_ || error_, "Loader::next: call start_epoch(epoch) first");
  if (error_) std::rethrow_exception(error_);
  if (consumed_ >= batches_per_epoch()) return std::nullopt;
  const int64_t step = consumed_;
  ready_cv_.wait(lk, [&] {
    if (error_ || stop_) return true;
    auto it = slots_.find(step);
    return it != slots_.end() && it->second->ready;
  });
  if (error_) std::rethrow_exception(error_);
  TORCH_CHECK(!stop_, "Loader::next: the loader is shutting down");
  auto it = slots_.find(step);
  Batch batch = std::move(it->second->batch);
  slots_.erase(it);
  ++consumed_;
  lk.unlock();
  work_cv_.notify_all();
  return batch;
}

int64_t Loader::skipped_count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int64_t>(skipped_.size());
}

std::vector<std::string> Loader::skipped_files() const {
  std::lock_guard<std::mutex> lk(mu_);
  return {skipped_.begin(), skipped_.end()};
}

}  // namespace beitv2::data
