#pragma once
// The command line every trainer shares (tools/<trainer>/main.cpp stays a few lines):
//
//   <trainer> --config FILE [--set key.path=value ...] [--resume auto|DIR] [--stop-after N] [--force-resume]
//             [--dist-backend auto|gloo|nccl] [--dist-timeout SECONDS]
//
// Under torchrun or srun (train/dist.h) every process runs this; rank 0 prints the closing line.
//
// Exit codes: 0 finished or cleanly stopped (SIGINT/SIGTERM, --stop-after), 1 error (one line on stderr),
// 2 bad command line.

#include <functional>
#include <string>
#include <vector>

#include "beitv2/train/loop.h"

namespace beitv2 {

/// What a trainer's main hands over: the config file, the overrides and the loop options; it returns the
/// closing line printed on stdout.
using TrainerRun = std::function<std::string(const std::string& config, const std::vector<std::string>& overrides,
                                             const LoopOptions& options)>;

/// Parses argv, calls `run`, prints its line; any exception becomes "<name>: error: <what>" and exit 1.
int trainer_main(int argc, char** argv, const std::string& name, const std::string& about, const TrainerRun& run);

}  // namespace beitv2
