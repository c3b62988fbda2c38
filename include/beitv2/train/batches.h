#pragma once
// Where a trainer's batches come from: a BatchSource over the threaded data::Loader, and the two single-view
// sources every image trainer starts from (data.train's training view, data.val's evaluation view).

#include <cstdint>
#include <memory>
#include <optional>

#include "beitv2/data/dataset.h"
#include "beitv2/data/loader.h"
#include "beitv2/data/masking.h"
#include "beitv2/data/transforms.h"
#include "beitv2/train/config.h"

namespace beitv2 {

/// A source of batches whose content depends only on (seed, epoch, batch index): batch k of epoch e is the
/// same images with the same augmentation whatever the number of workers or where a run resumed.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// Images in the dataset (for the start-up table).
  virtual int64_t size() const = 0;
  virtual int64_t batches_per_epoch() const = 0;
  /// Starts `epoch` at batch `first`.
  virtual void start_epoch(int64_t epoch, int64_t first) = 0;
  /// The epoch's next batch, nullopt after its last.
  virtual std::optional<data::Batch> next() = 0;
};

/// The same batch, forever (one per epoch): benchmarks and tests that time or compare single steps.
class FixedBatch : public BatchSource {
 public:
  explicit FixedBatch(data::Batch batch) : batch_(std::move(batch)) {}
  int64_t size() const override { return batch_.size(); }
  int64_t batches_per_epoch() const override { return 1; }
  void start_epoch(int64_t, int64_t) override {}
  std::optional<data::Batch> next() override { return batch_; }

 private:
  data::Batch batch_;
};

/// Loader options from data: (workers, decode policy); `train` shuffles and drops the last short batch, the
/// evaluation order keeps every image; rank/world shard the epoch (data/loader.h).
data::LoaderOptions loader_options(const DataConfig& data, bool train, int64_t seed, int64_t batch_size,
                                   int64_t rank = 0, int64_t world = 1);

/// A BatchSource over a data::Loader (the first `count` samples of a dataset made by `fn`).
std::unique_ptr<BatchSource> make_batch_source(int64_t count, data::SampleFn fn, data::LoaderOptions options);

/// A labelled ImageFolder (one sub-folder per class); an empty `folder`, a missing one or one without images is
/// a ConfigError naming `key` (e.g. "data.val").
std::shared_ptr<const data::ImageDataset> open_image_folder(const std::string& key, const std::string& folder);

/// One view of `data.train` (train = true: RandomResizedCrop(size, (min_crop_scale, 1), bicubic) + flip,
/// shuffled, drop_last, data.limit applied) or of `data.val` (train = false: resize size*256/224 + centre
/// crop, in order, every image). A missing or empty folder is a ConfigError naming the key.
std::unique_ptr<BatchSource> make_view_batches(const DataConfig& data, int64_t size, bool train, int64_t seed,
                                               int64_t batch_size, int64_t rank = 0, int64_t world = 1);

/// BEiT v2 pretraining samples of a folder (docs/reference.md §3.4–3.5): ColorJitter 0.4 -> flip ->
/// one crop box resized to the student view (size) and the tokenizer view (transform.second_size), and a
/// block-wise mask; batch.images = {student, tokenizer} uint8, batch.masks (B, N) bool. `train` false: in
/// order, every image, and the same augmentation and masks at every call (epoch 0's).
std::unique_ptr<BatchSource> make_two_view_batches(const std::string& key, const std::string& folder,
                                                   const DataConfig& data, const data::TwoViewTransform& transform,
                                                   const data::MaskingOptions& masking, bool train, int64_t seed,
                                                   int64_t batch_size, int64_t limit = 0, int64_t rank = 0,
                                                   int64_t world = 1);

}  // namespace beitv2
