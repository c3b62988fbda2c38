#pragma once
// The data layer: decoding, datasets, transforms (Pillow-compatible), RandAugment, random erasing, block-wise
// masking, and the threaded loader with its ready-made pipelines.
#include "beitv2/data/dataset.h"
#include "beitv2/data/image.h"
#include "beitv2/data/loader.h"
#include "beitv2/data/masking.h"
#include "beitv2/data/pil_ops.h"
#include "beitv2/data/pipelines.h"
#include "beitv2/data/rand_augment.h"
#include "beitv2/data/random_erasing.h"
#include "beitv2/data/rng.h"
#include "beitv2/data/transforms.h"
