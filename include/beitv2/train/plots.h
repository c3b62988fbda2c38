#pragma once
// PNG figures for a run directory (OpenCV drawing; no plotting library needed).

#include <torch/types.h>

#include <filesystem>

namespace beitv2 {

/// Bar chart of code counts sorted from most to least used, with the used/total count in the title.
void plot_codebook_usage(const torch::Tensor& counts, const std::filesystem::path& png, const std::string& title);

/// Each image beside its token map: every patch painted with a colour fixed per code id.
/// images uint8 (B, 3, S, S); ids (B, g*g).
void plot_token_maps(const torch::Tensor& images, const torch::Tensor& ids, int64_t grid,
                     const std::filesystem::path& png);

/// Masked image modelling at a glance, one row per image: the image, its mask (masked patches dark), and for
/// each head the masked patches it predicted right (green) or wrong (red). images uint8 (B, 3, S, S); mask,
/// correct_1, correct_2 bool (B, g*g) (correct_* only meaningful where masked; correct_2 may be undefined).
void plot_mim_predictions(const torch::Tensor& images, const torch::Tensor& mask, const torch::Tensor& correct_1,
                          const torch::Tensor& correct_2, int64_t grid, const std::filesystem::path& png);

}  // namespace beitv2
