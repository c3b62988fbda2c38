#pragma once
// PNG figures for a run directory (OpenCV drawing; no plotting library needed). The files a run keeps under
// plots/ are described in docs/architecture.md ("Run directory").

#include <torch/types.h>

#include <filesystem>
#include <utility>
#include <string>
#include <vector>

namespace beitv2 {

/// Where the figure of kind `kind` ("codebook_usage", "token_map", "mim") of the evaluation after `epoch` goes:
/// always `plots_dir`/<kind>.png (the latest, overwritten), and also
/// `plots_dir`/history/<kind>_epoch_<epoch>.png for the run's first evaluation, the 2nd, 3rd, 5th, 9th, ...
/// (evaluation index 0 or a power of two; with evaluations every `eval_every` epochs the index is
/// (epoch + 1) / eval_every - 1, so with eval_every 1: epochs 0, 1, 2, 4, 8, ...) and its last (`final`). A run
/// thus keeps a logarithmic number of history files. Creates the directories it names.
std::vector<std::filesystem::path> plot_paths(const std::filesystem::path& plots_dir, const std::string& kind,
                                              int64_t epoch, bool final, int64_t eval_every = 1);

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

/// Semantic segmentation at a glance, one row per image: the image, the ground truth over it, the prediction
/// over it (each class a fixed colour blended half over the image; ignored pixels darkened). Each row is 192
/// pixels high, each cell as wide as its image's aspect gives. images[i] uint8 (3, H, W); labels[i], preds[i]
/// uint8 or int64 (H, W) class ids, 255 = ignore. Sizes may differ between images.
void plot_segmentation(const std::vector<torch::Tensor>& images, const std::vector<torch::Tensor>& labels,
                       const std::vector<torch::Tensor>& preds, const std::filesystem::path& png);

/// One line of a curves figure: y over x (same length; non-finite points are left out).
struct CurveSeries {
  std::string name;
  std::vector<double> x, y;
};

/// A grid of small line panels, one per series (up to 4 a row), each titled with its name and last value, with
/// the min/max of both axes written at the axis ends; `title` above them all.
void plot_curves(const std::vector<CurveSeries>& panels, const std::filesystem::path& png, const std::string& title);

/// The series of a run's metrics.jsonl (one JSON object a line, each with a "step"): one per numeric key, over
/// step: losses, accuracies, the others, then the same for val_* keys, each group in the order keys first
/// appear (a record's keys read in sorted order); bookkeeping keys (epoch, step, skipped_nonfinite, skipped_in_window,
/// min_lr, weight_decay) are left out. Lines that are not JSON objects with a step are skipped. A resumed run
/// logs steps again: a record whose step is below the previous one drops every point from that step on, and
/// at a repeated step the later value wins. Throws IoError when the file cannot be opened.
std::vector<CurveSeries> read_metric_curves(const std::filesystem::path& metrics_jsonl);

/// plot_curves of read_metric_curves(metrics_jsonl).
void plot_metric_curves(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& png,
                        const std::string& title);

/// Confusion matrix as a heat map: cell (i, j) counts images of true class i predicted as j, shaded by its share
/// of row i (white 0 → dark blue 1), with the count written in it and the class names along both axes.
/// counts int64 (C, C), rows = true class; class_names C names. The image is confusion_matrix_size(C).
void plot_confusion_matrix(const torch::Tensor& counts, const std::vector<std::string>& class_names,
                           const std::filesystem::path& png, const std::string& title);
/// (width, height) of plot_confusion_matrix's image for C classes: a 130-pixel band for the class names left
/// and on top, C cells of 40 pixels (fewer pixels from 21 classes on, at least 4), 10 pixels of border, and a
/// 30-pixel title band above.
std::pair<int, int> confusion_matrix_size(int64_t classes);

}  // namespace beitv2
