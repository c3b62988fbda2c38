#pragma once
// Everything a program linking beitv2::beitv2 needs: models, blocks, weights I/O, image helpers.
#include "beitv2/core/autocast.h"
#include "beitv2/core/collectives.h"
#include "beitv2/core/config_yaml.h"
#include "beitv2/core/fs.h"
#include "beitv2/core/log.h"
#include "beitv2/data/image.h"
#include "beitv2/io/safetensors.h"
#include "beitv2/io/state_dict.h"
#include "beitv2/models.h"
#include "beitv2/nn.h"
#include "beitv2/teacher/teacher.h"
#include "beitv2/version.h"
