#pragma once
// A threaded, deterministic data loader producing uint8 batches.
//
// The caller chooses what a sample is through a SampleFn `(index, rng) -> Sample` (data/pipelines.h has the
// pretraining, tokenizer, fine-tuning and evaluation ones), so one loader serves every trainer.
//
// Order: per epoch, the dataset indices are permuted with torch.randperm(N) seeded with seed + epoch (the order
// torch's DistributedSampler uses), then sharded as DistributedSampler does: padded by wrapping to a multiple of
// world_size (or the tail dropped), rank r taking positions r, r + world_size, ...; every rank gets the same count.
// Each rank's list is cut into batches of batch_size (drop_last drops the final short one).
//
// Determinism: sample i of epoch e is made with Rng::for_sample(seed, e, i), so batches are identical whatever
// the number of worker threads and whatever the timing. Workers fill batches sample by sample (several threads
// share a batch) at most `prefetch_batches` ahead of the consumer; batches are handed out in order.
//
// Errors: a DecodeError is handled by the decode policy (skip: one warning per file, counted, and the sample is
// replaced by the next decodable dataset index, so batches keep their size; fail: like any other error). Any
// other exception stops the workers and is rethrown, unchanged, by next() (the pipelines' messages name the
// file). The destructor stops and joins the workers, also mid-epoch.

#include <opencv2/core/mat.hpp>
#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "beitv2/data/dataset.h"
#include "beitv2/data/rng.h"

namespace beitv2::data {

/// One decoded, augmented sample.
struct Sample {
  std::vector<cv::Mat> views;  ///< uint8 RGB (H, W, 3) per view; a view has the same size in every sample
  int64_t label = -1;          ///< class label, -1 if unlabelled
  torch::Tensor mask;          ///< optional bool (N) (block-wise mask), undefined if none
};

/// Makes dataset sample `index` with its own generator (Rng::for_sample(seed, epoch, index)). Called from worker
/// threads concurrently: it must be thread-safe. May throw DecodeError (subject to the decode policy).
using SampleFn = std::function<Sample(int64_t index, Rng& rng)>;

/// A batch: B samples in the epoch order of this rank.
struct Batch {
  std::vector<torch::Tensor> images;  ///< per view: uint8 (B, 3, H, W), page-locked when CUDA is available
  torch::Tensor labels;               ///< int64 (B); -1 for unlabelled samples
  torch::Tensor masks;                ///< bool (B, N), or undefined when the samples carry no mask
  torch::Tensor indices;              ///< int64 (B): the dataset index of each sample (a skipped file's
                                      ///< replacement shows its own index)
  int64_t epoch = 0;
  int64_t step = 0;                   ///< batch number within the epoch on this rank

  int64_t size() const { return indices.defined() ? indices.size(0) : 0; }
};

/// Example (pretraining on 8 ranks):
///   LoaderOptions o;  o.batch_size = 128;  o.num_workers = 8;  o.rank = rank;  o.world_size = 8;
struct LoaderOptions {
  int64_t batch_size = 64;
  static constexpr int kMaxWorkers = 1024;
  int num_workers = 2;               ///< worker threads, in [1, kMaxWorkers]
  int prefetch_batches = 4;          ///< batches produced ahead of the consumer (>= 1)
  bool shuffle = true;               ///< permute per epoch from (seed, epoch); false: dataset order
  bool drop_last = true;             ///< drop this rank's final incomplete batch
  bool shard_drop_tail = false;      ///< false: pad by wrapping so each rank gets ceil(N / world_size) samples
                                     ///< (DistributedSampler's drop_last=False); true: floor(N / world_size)
  uint64_t seed = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
  DecodePolicy decode_policy = DecodePolicy::kSkip;
  bool pin_memory = true;            ///< page-locked batches, only when CUDA is available
  int max_skip_run = 64;             ///< unreadable files in a row (from one index on) before giving up

  /// Throws ConfigError naming the bad field.
  void validate() const;
};

class Loader {
 public:
  /// `dataset_size` samples, made by `fn`. Starts the worker threads (idle until start_epoch); throws
  /// std::runtime_error, with no thread left running, when the system refuses to start them all.
  Loader(int64_t dataset_size, SampleFn fn, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Starts epoch `epoch` at batch `first_step` (> 0 to resume mid-epoch); abandons an unfinished epoch.
  void start_epoch(int64_t epoch, int64_t first_step = 0);

  /// The epoch's next batch, or nullopt after its last. Blocks until ready; rethrows a worker's exception.
  std::optional<Batch> next();

  /// Batches per epoch on this rank.
  int64_t batches_per_epoch() const;
  /// Samples per epoch on this rank (before batching; includes padding).
  int64_t samples_per_rank() const;
  /// This rank's dataset indices for `epoch`, in order (before batching and drop_last).
  std::vector<int64_t> epoch_indices(int64_t epoch) const;

  /// Files skipped so far (decode policy skip), each counted once.
  int64_t skipped_count() const;
  std::vector<std::string> skipped_files() const;

  const LoaderOptions& options() const { return options_; }

 private:
  struct Slot;
  void worker_loop();
  void stop_workers();  // stops and joins every worker
  Sample make_sample(int64_t index, int64_t epoch, int64_t* used_index);
  Batch assemble(std::vector<Sample>& samples, const std::vector<int64_t>& indices, int64_t epoch,
                 int64_t step) const;
  int64_t batch_length(int64_t step) const;

  int64_t dataset_size_;
  SampleFn fn_;
  LoaderOptions options_;
  bool pin_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // workers wait for work
  std::condition_variable ready_cv_;  // the consumer (and start_epoch) wait for results
  bool stop_ = false;
  bool running_ = false;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;        // this rank's indices for the epoch
  int64_t next_item_ = 0;             // next position in order_ to hand to a worker
  int64_t end_item_ = 0;              // positions [0, end_item_) are produced
  int64_t consumed_ = 0;              // next step to hand to the caller
  int64_t in_flight_ = 0;
  std::map<int64_t, std::unique_ptr<Slot>> slots_;
  std::exception_ptr error_;
  std::set<std::string> skipped_;
  std::vector<std::thread> workers_;
};

}  // namespace beitv2::data
