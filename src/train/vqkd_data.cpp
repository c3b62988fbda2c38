// The tokenizer trainer's image batches (SPEC.md §2) on the shared data pipeline (data/loader.h): training view
// RandomResizedCrop(size, (min_crop_scale, 1), (3/4, 4/3)) + flip 0.5 (data::TrainTransform), evaluation view
// resize(size*256/224) + centre crop (data::EvalTransform). Sample randomness derives from (seed, epoch, index),
// so batch k of epoch e is the same whatever the number of workers or where a run resumed.
#include <torch/torch.h>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/dataset.h"
#include "beitv2/data/image.h"
#include "beitv2/data/loader.h"
#include "beitv2/data/pipelines.h"
#include "beitv2/data/transforms.h"
#include "beitv2/train/vqkd_trainer.h"

namespace beitv2 {
namespace {

class LoaderBatches : public ImageBatches {
 public:
  // The first `count` images of the dataset (data.limit), made by `fn`.
  LoaderBatches(int64_t count, data::SampleFn fn, data::LoaderOptions o) : count_(count), loader_(count, std::move(fn), std::move(o)) {}

  int64_t size() const override { return count_; }
  int64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }

  void run_epoch(int64_t epoch, int64_t first,
                 const std::function<bool(int64_t, const torch::Tensor&)>& consume) override {
    loader_.start_epoch(epoch, first);
    while (auto batch = loader_.next()) {
      if (!consume(batch->step, batch->images.at(0))) return;
    }
  }

 private:
  int64_t count_;
  data::Loader loader_;
};

}  // namespace

std::unique_ptr<ImageBatches> make_vqkd_batches(const DataConfig& d, int64_t size, bool train, int64_t seed,
                                                int64_t batch_size, int64_t rank, int64_t world) {
  const std::string key = train ? "data.train" : "data.val";
  const std::string& folder = train ? d.train : d.val;
  std::shared_ptr<const data::ImageDataset> dataset;
  try {
    dataset = std::make_shared<const data::ImageDataset>(data::ImageDataset::folder(folder));
  } catch (const IoError& e) {
    throw ConfigError(key + " = " + folder + ": " + e.what());
  }
  data::LoaderOptions o;
  o.batch_size = batch_size;
  o.num_workers = static_cast<int>(std::max<int64_t>(1, d.workers));
  o.shuffle = train;
  o.drop_last = train;  // evaluation sees every image
  o.seed = static_cast<uint64_t>(seed);
  o.rank = rank;
  o.world_size = world;
  o.decode_policy = data::parse_decode_policy(d.decode_errors);
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
  return std::make_unique<LoaderBatches>(count, std::move(fn), o);
}

}  // namespace beitv2
