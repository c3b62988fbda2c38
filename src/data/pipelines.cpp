#include "beitv2/data/pipelines.h"

#include <c10/util/Exception.h>

#include <stdexcept>
#include <utility>

namespace beitv2::data {

namespace {

/// Runs `f` for sample i; errors other than DecodeError come back as "<file>: <message>".
template <class F>
Sample named(const ImageDataset& ds, int64_t i, F&& f) {
  try {
    return f();
  } catch (const DecodeError&) {
    throw;
  } catch (const c10::Error& e) {
    throw std::runtime_error(ds.path(i).string() + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error(ds.path(i).string() + ": " + e.what());
  }
}

}  // namespace

SampleFn pretrain_sample_fn(std::shared_ptr<const ImageDataset> dataset, TwoViewTransform transform,
                            MaskingGenerator masking) {
  TORCH_CHECK(dataset, "pretrain_sample_fn: no dataset");
  transform.validate();
  return [ds = std::move(dataset), t = std::move(transform), m = std::move(masking)](int64_t i, Rng& rng) {
    return named(*ds, i, [&] {
      Sample s;
      Rng mask_rng = rng.split();
      auto views = t(ds->load(i), rng);
      s.views = {std::move(views.first), std::move(views.second)};
      s.mask = m(mask_rng);
      s.label = ds->label(i);
      return s;
    });
  };
}

namespace {
// One augmented view + label: the tokenizer-training and fine-tuning pipelines differ only in the transform.
template <typename Transform>
SampleFn one_view_sample_fn(std::shared_ptr<const ImageDataset> dataset, Transform transform, const char* what) {
  TORCH_CHECK(dataset, what, ": no dataset");
  transform.validate();
  return [ds = std::move(dataset), t = std::move(transform)](int64_t i, Rng& rng) {
    return named(*ds, i, [&] {
      Sample s;
      s.views = {t(ds->load(i), rng)};
      s.label = ds->label(i);
      return s;
    });
  };
}
}  // namespace

SampleFn train_sample_fn(std::shared_ptr<const ImageDataset> dataset, TrainTransform transform) {
  return one_view_sample_fn(std::move(dataset), std::move(transform), "train_sample_fn");
}

SampleFn finetune_sample_fn(std::shared_ptr<const ImageDataset> dataset, FinetuneTransform transform) {
  return one_view_sample_fn(std::move(dataset), std::move(transform), "finetune_sample_fn");
}

SampleFn eval_sample_fn(std::shared_ptr<const ImageDataset> dataset, EvalTransform transform) {
  TORCH_CHECK(dataset, "eval_sample_fn: no dataset");
  transform.validate();
  return [ds = std::move(dataset), t = std::move(transform)](int64_t i, Rng&) {
    return named(*ds, i, [&] {
      Sample s;
      s.views = {t(ds->load(i))};
      s.label = ds->label(i);
      return s;
    });
  };
}

}  // namespace beitv2::data
