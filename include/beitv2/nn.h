#pragma once
// Umbrella header for beitv2's building blocks.
#include "beitv2/nn/attention.h"
#include "beitv2/nn/drop_path.h"
#include "beitv2/nn/enums.h"
#include "beitv2/nn/init.h"
#include "beitv2/nn/mlp.h"
#include "beitv2/nn/patch_embed.h"
#include "beitv2/nn/rel_pos_bias.h"
#include "beitv2/nn/vector_quantizer.h"
#include "beitv2/nn/vit_block.h"
