#pragma once
// Ready-made sample functions for the Loader: decode a dataset file, transform it, attach label and mask.
//
//   pretrain_sample_fn   BEiT v2 MIM: two views (student, tokenizer) + block-wise mask + label   (§3.4, §3.5)
//   train_sample_fn      VQ-KD tokenizer training / linear probe: one view + label              (§2)
//   finetune_sample_fn   fine-tuning: one RandAugment'ed view + label (RandomErasing on device) (§5)
//   eval_sample_fn       evaluation: Resize + CenterCrop, one view + label
// (§ = sections of docs/reference.md.)
//
// Errors other than DecodeError are rethrown as std::runtime_error("<file>: <message>"), so the loader's
// caller learns which file failed.

#include <memory>

#include "beitv2/data/dataset.h"
#include "beitv2/data/loader.h"
#include "beitv2/data/masking.h"
#include "beitv2/data/transforms.h"

namespace beitv2::data {

/// Two views + mask: Sample::views = {student (size), tokenizer (second_size)}, Sample::mask bool (N) drawn
/// from an Rng split off the sample's own.
SampleFn pretrain_sample_fn(std::shared_ptr<const ImageDataset> dataset, TwoViewTransform transform,
                            MaskingGenerator masking);

/// One view: [ColorJitter] -> RandomResizedCrop -> hflip.
SampleFn train_sample_fn(std::shared_ptr<const ImageDataset> dataset, TrainTransform transform);

/// One view: RandomResizedCrop -> hflip -> RandAugment.
SampleFn finetune_sample_fn(std::shared_ptr<const ImageDataset> dataset, FinetuneTransform transform);

/// One view: Resize -> CenterCrop (deterministic; the rng is unused).
SampleFn eval_sample_fn(std::shared_ptr<const ImageDataset> dataset, EvalTransform transform);

}  // namespace beitv2::data
