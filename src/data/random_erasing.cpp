// Random erasing (timm/data/random_erasing.py).
#include "beitv2/data/random_erasing.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/StringUtil.h>
#include <torch/torch.h>

#include <cmath>

#include "beitv2/core/config_yaml.h"
#include "beitv2/data/rng.h"

namespace beitv2::data {

void RandomErasingOptions::validate() const {
  if (!(probability >= 0 && probability <= 1)) {
    throw ConfigError(c10::str("random_erasing.probability = ", probability, " must be in [0, 1]"));
  }
  if (!(min_area > 0 && min_area <= max_area && max_area <= 1)) {
    throw ConfigError(
        c10::str("random_erasing area = [", min_area, ", ", max_area, "] must satisfy 0 < min <= max <= 1"));
  }
  if (!(min_aspect > 0)) throw ConfigError(c10::str("random_erasing.min_aspect = ", min_aspect, " must be > 0"));
  if (mode != "pixel" && mode != "rand" && mode != "const") {
    throw ConfigError("random_erasing.mode = '" + mode + "' (pixel, rand or const)");
  }
  if (!(min_count >= 1 && max_count >= min_count)) {
    throw ConfigError(
        c10::str("random_erasing count = [", min_count, ", ", max_count, "] must satisfy 1 <= min <= max"));
  }
}

RandomErasing::RandomErasing(RandomErasingOptions options) : options_(std::move(options)) { options_.validate(); }

void RandomErasing::apply_(torch::Tensor& x, uint64_t seed, int64_t epoch, const torch::Tensor& indices) const {
  TORCH_CHECK(x.dim() == 4 && x.is_floating_point(), "RandomErasing: expected a float (B, C, H, W) batch, got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(indices.dim() == 1 && indices.size(0) == x.size(0), "RandomErasing: indices ", indices.sizes(),
              " do not match the batch of ", x.size(0));
  const auto& o = options_;
  const auto idx = indices.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const double max_aspect = o.max_aspect == -1 ? 1.0 / o.min_aspect : o.max_aspect;
  const double la0 = std::log(o.min_aspect), la1 = std::log(max_aspect);
  for (int64_t b = 0; b < x.size(0); ++b) {
    Rng rng = Rng::for_sample(seed, epoch, idx.data_ptr<int64_t>()[b], RngStream::kErasing);
    if (rng.uniform() > o.probability) continue;
    const int64_t count = o.min_count == o.max_count ? o.min_count : rng.randint(o.min_count, o.max_count);
    for (int64_t c = 0; c < count; ++c) {
      for (int attempt = 0; attempt < 10; ++attempt) {
        const double target_area = rng.uniform(o.min_area, o.max_area) * static_cast<double>(H * W) / count;
        const double aspect = std::exp(rng.uniform(la0, la1));
        const int64_t h = py_round(std::sqrt(target_area * aspect));
        const int64_t w = py_round(std::sqrt(target_area / aspect));
        if (w < W && h < H) {
          const int64_t top = rng.randint(0, H - h), left = rng.randint(0, W - w);
          auto gen = at::detail::createCPUGenerator(rng.next());
          torch::Tensor fill;
          if (o.mode == "pixel") {
            fill = torch::randn({C, h, w}, gen, torch::kFloat32);
          } else if (o.mode == "rand") {
            fill = torch::randn({C, 1, 1}, gen, torch::kFloat32);
          } else {
            fill = torch::zeros({C, 1, 1}, torch::kFloat32);
          }
          x[b].slice(1, top, top + h).slice(2, left, left + w).copy_(fill.to(x.device(), x.scalar_type()));
          break;
        }
      }
    }
  }
}

}  // namespace beitv2::data
