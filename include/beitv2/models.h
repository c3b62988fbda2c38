#pragma once
// Umbrella header for beitv2's models.
#include "beitv2/models/registry.h"
#include "beitv2/models/vit.h"
#include "beitv2/models/vit_config.h"
#include "beitv2/models/vqkd.h"
#include "beitv2/models/beitv2.h"
#include "beitv2/models/segmentation.h"
