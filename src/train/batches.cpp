// Batch sources on the shared data pipeline (data/loader.h). Sample randomness derives from (seed, epoch,
// index), so batch k of epoch e is the same whatever the number of workers or where a run resumed.
#include "beitv2/train/batches.h"

#include <torch/torch.h>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/dataset.h"
#include "beitv2/data/image.h"
#include "beitv2/data/pipelines.h"
#include "beitv2/data/transforms.h"

namespace beitv2 {
namespace {

class LoaderSource : public BatchSource {
 public:
  LoaderSource(int64_t count, data::SampleFn fn, data::LoaderOptions o)
      : count_(count), loader_(count, std::move(fn), std::move(o)) {}
  int64_t size() const override { return count_; }
  int64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  void start_epoch(int64_t epoch, int64_t first) override { loader_.start_epoch(epoch, first); }
  std::optional<data::Batch> next() override { return loader_.next(); }

 private:
  int64_t count_;
  data::Loader loader_;
};

}  // namespace

std::unique_ptr<BatchSource> make_batch_source(int64_t count, data::SampleFn fn, data::LoaderOptions options) {
  return std::make_unique<LoaderSource>(count, std::move(fn), std::move(options));
}

std::shared_ptr<const data::ImageDataset> open_image_folder(const std::string& key, const std::string& folder) {
  if (folder.empty()) config_fail(key, "\"\"", "an ImageFolder (one sub-folder per class) is required");
  try {
    return std::make_shared<const data::ImageDataset>(data::ImageDataset::image_folder(folder));
  } catch (const IoError& e) {
    throw ConfigError(key + " = " + folder + ": " + e.what());
  }
}

data::LoaderOptions loader_options(const DataConfig& d, bool train, int64_t seed, int64_t batch_size, int64_t rank,
                                   int64_t world) {
  data::LoaderOptions o;
  o.batch_size = batch_size;
  o.num_workers = static_cast<int>(std::max<int64_t>(1, d.workers));
  o.shuffle = train;
  o.drop_last = train;  // evaluation sees every image
  o.seed = static_cast<uint64_t>(seed);
  o.rank = rank;
  o.world_size = world;
  o.decode_policy = data::parse_decode_policy(d.decode_errors);
  return o;
}

namespace {

std::shared_ptr<const data::ImageDataset> folder_dataset(const std::string& key, const std::string& folder,
                                                         const DataConfig& d) {
  try {
    auto ds = std::make_shared<data::ImageDataset>(data::ImageDataset::folder(folder));
    ds->set_decode_options({.max_pixels = d.max_pixels});
    return ds;
  } catch (const IoError& e) {
    throw ConfigError(key + " = " + folder + ": " + e.what());
  }
}

}  // namespace

std::unique_ptr<BatchSource> make_view_batches(const DataConfig& d, int64_t size, bool train, int64_t seed,
                                               int64_t batch_size, int64_t rank, int64_t world) {
  const auto dataset = folder_dataset(train ? "data.train" : "data.val", train ? d.train : d.val, d);
  const int interp = data::parse_interpolation(d.interpolation);
  data::SampleFn fn;
  if (train) {
    data::TrainTransform t;
    t.crop.size = static_cast<int>(size);
    t.crop.scale = {d.min_crop_scale, 1.0};
    t.crop.interpolation = interp;
    fn = data::train_sample_fn(dataset, t);
  } else {
    data::EvalTransform t;
    t.crop = static_cast<int>(size);
    t.interpolation = interp;
    fn = data::eval_sample_fn(dataset, t);
  }
  const int64_t count = train && d.limit > 0 ? std::min(d.limit, dataset->size()) : dataset->size();
  return make_batch_source(count, std::move(fn), loader_options(d, train, seed, batch_size, rank, world));
}

namespace {

// Always epoch 0 of the underlying loader: evaluation sees the same views and masks every time.
class FixedEpoch : public BatchSource {
 public:
  explicit FixedEpoch(std::unique_ptr<BatchSource> inner) : inner_(std::move(inner)) {}
  int64_t size() const override { return inner_->size(); }
  int64_t batches_per_epoch() const override { return inner_->batches_per_epoch(); }
  void start_epoch(int64_t, int64_t first) override { inner_->start_epoch(0, first); }
  std::optional<data::Batch> next() override { return inner_->next(); }

 private:
  std::unique_ptr<BatchSource> inner_;
};

}  // namespace

std::unique_ptr<BatchSource> make_two_view_batches(const std::string& key, const std::string& folder,
                                                   const DataConfig& d, const data::TwoViewTransform& transform,
                                                   const data::MaskingOptions& masking, bool train, int64_t seed,
                                                   int64_t batch_size, int64_t limit, int64_t rank, int64_t world) {
  const auto dataset = folder_dataset(key, folder, d);
  auto fn = data::pretrain_sample_fn(dataset, transform, data::MaskingGenerator(masking));
  const int64_t count = limit > 0 ? std::min(limit, dataset->size()) : dataset->size();
  auto src = make_batch_source(count, std::move(fn), loader_options(d, train, seed, batch_size, rank, world));
  if (train) return src;
  return std::make_unique<FixedEpoch>(std::move(src));
}

}  // namespace beitv2
