// The run directory's figures (include/beitv2/train/plots.h): which evaluations keep a history copy, curves read
// from a metrics.jsonl (resumed runs, lines that are not records), and the confusion-matrix heat map.
#include <opencv2/imgcodecs.hpp>

#include <fstream>

#include "beitv2/core/fs.h"
#include "beitv2/train/plots.h"
#include "common.h"

namespace beitv2 {
namespace {

TEST(PlotPaths, KeepsHistoryAtEpochZeroPowersOfTwoAndTheLast) {
  test::TempDir dir("plot_paths");
  const auto plots = dir / "plots";
  std::vector<int64_t> kept;
  for (int64_t e = 0; e <= 100; ++e) {
    const auto paths = plot_paths(plots, "mim", e, /*final=*/e == 100);
    ASSERT_GE(paths.size(), 1u);
    EXPECT_EQ(paths[0], plots / "mim.png");
    if (paths.size() == 2) {
      EXPECT_EQ(paths[1], plots / "history" / ("mim_epoch_" + std::to_string(e) + ".png"));
      kept.push_back(e);
    }
  }
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 1, 2, 4, 8, 16, 32, 64, 100}));
  EXPECT_TRUE(std::filesystem::is_directory(plots / "history"));
  EXPECT_EQ(plot_paths(plots, "mim", 5, /*final=*/true).size(), 2u);
  EXPECT_EQ(plot_paths(plots, "mim", 64, /*final=*/true).size(), 2u);  // not written twice
  // Evaluations every 10 epochs (after epochs 9, 19, ...): the 1st, 2nd, 3rd, 5th, 9th, 17th and the last.
  kept.clear();
  for (int64_t e = 9; e <= 299; e += 10) {
    if (plot_paths(plots, "mim", e, /*final=*/e == 299, /*eval_every=*/10).size() == 2) kept.push_back(e);
  }
  EXPECT_EQ(kept, (std::vector<int64_t>{9, 19, 29, 49, 89, 169, 299}));
}

// A run of steps 10..20, stopped, resumed from step 20 (the first invocation had logged up to 30), and ended at 30.
const char* kMetrics =
    R"({"step":10,"epoch":0,"loss":5.0,"lr":0.001,"min_lr":1e-5,"weight_decay":0.05,"skipped_nonfinite":0,"grad_norm":2.0,"mlm_acc":0.1}
not a JSON line
{"step":20,"epoch":0,"loss":4.0,"lr":0.002,"min_lr":1e-5,"weight_decay":0.05,"skipped_nonfinite":0,"grad_norm":1.0}
{"epoch":0,"step":20,"val_loss":4.5,"val_acc":0.25}
{"step":30,"epoch":1,"loss":9.0,"lr":0.001,"grad_norm":9.0}
{"step":25,"epoch":1,"loss":3.5,"lr":0.0015,"grad_norm":0.5}
[1, 2, 3]
{"loss":1.0}
{"step":30,"epoch":1,"loss":2.5,"lr":0.001,"grad_norm":0.5,"note":"text"}
{"step":30,"epoch":1,"loss":2.0,"lr":0.001,"grad_norm":0.25}
{"step":30,"epoch":1,"val_loss":3.0,"val_acc":0.5}
{"step":40,"epoch":1,"loss":
)";

TEST(Curves, ReadsAResumedRunsMetricsAndSkipsNonRecords) {
  test::TempDir dir("curves");
  std::ofstream(dir / "metrics.jsonl") << kMetrics;
  const auto series = read_metric_curves(dir / "metrics.jsonl");
  std::vector<std::string> names;
  for (const auto& s : series) names.push_back(s.name);
  // Losses, accuracies, the rest, then the evaluation's; within a group as first seen (a record's keys sorted).
  EXPECT_EQ(names, (std::vector<std::string>{"loss", "mlm_acc", "grad_norm", "lr", "val_loss", "val_acc"}));
  ASSERT_EQ(series.size(), 6u);
  EXPECT_EQ(series[0].x, (std::vector<double>{10, 20, 25, 30}));  // the first invocation's step 30 superseded
  EXPECT_EQ(series[0].y, (std::vector<double>{5.0, 4.0, 3.5, 2.0}));  // at a repeated step the later wins
  EXPECT_EQ(series[1].x, (std::vector<double>{10}));
  EXPECT_EQ(series[2].y, (std::vector<double>{2.0, 1.0, 0.5, 0.25}));
  EXPECT_EQ(series[4].x, (std::vector<double>{20, 30}));
  EXPECT_EQ(series[5].y, (std::vector<double>{0.25, 0.5}));

  plot_metric_curves(dir / "metrics.jsonl", dir / "curves.png", "a resumed run");
  const cv::Mat img = cv::imread((dir / "curves.png").string());
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 4 * 300);  // 6 panels: 4 a row, two rows under the title band
  EXPECT_EQ(img.rows, 34 + 2 * 170);
  cv::Mat line;
  cv::inRange(img, cv::Scalar(180, 110, 30), cv::Scalar(180, 110, 30), line);  // the training series' colour
  EXPECT_GT(cv::countNonZero(line), 20);
}

TEST(Curves, AnEmptyFileGivesAFigureAndAMissingOneAnError) {
  test::TempDir dir("curves_empty");
  std::ofstream(dir / "metrics.jsonl") << "";
  plot_metric_curves(dir / "metrics.jsonl", dir / "curves.png", "nothing yet");
  const cv::Mat img = cv::imread((dir / "curves.png").string());
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 300);
  EXPECT_THROW(plot_metric_curves(dir / "absent.jsonl", dir / "x.png", "t"), IoError);
}

TEST(Curves, PlotCurvesDrawsGivenSeries) {
  test::TempDir dir("curves_given");
  std::vector<CurveSeries> panels = {{.name = "acc", .x = {0, 1, 2}, .y = {0.1, 0.5, 0.9}},
                                     {.name = "flat", .x = {5}, .y = {1.0}}};
  plot_curves(panels, dir / "c.png", "two panels");
  const cv::Mat img = cv::imread((dir / "c.png").string());
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 2 * 300);
  EXPECT_EQ(img.rows, 34 + 170);
}

TEST(ConfusionMatrix, TenClassesGiveADecodablePngOfTheDocumentedSize) {
  test::TempDir dir("confusion");
  auto counts = torch::randint(0, 5, {10, 10}, torch::kLong);
  counts.select(0, 0).zero_();
  counts[0][0] = 7;  // class 0 always right: its diagonal cell is fully shaded, its row's others white
  std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "a very long class name indeed"};
  plot_confusion_matrix(counts, names, dir / "cm.png", "fashion-mnist val");
  EXPECT_EQ(confusion_matrix_size(10), (std::pair<int, int>{540, 570}));
  const cv::Mat img = cv::imread((dir / "cm.png").string());
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 540);
  EXPECT_EQ(img.rows, 570);
  // The grid starts at (130, 30 + 130) with 40-pixel cells; look inside a cell's corner, clear of its number.
  const int gx = 130, gy = 160;
  EXPECT_EQ(img.at<cv::Vec3b>(gy + 3, gx + 3), cv::Vec3b(120, 40, 10));        // (0, 0): share 1
  EXPECT_EQ(img.at<cv::Vec3b>(gy + 3, gx + 40 + 3), cv::Vec3b(255, 255, 255));  // (0, 1): share 0
  EXPECT_THROW(plot_confusion_matrix(counts, {"a", "b"}, dir / "bad.png", "t"), c10::Error);
}

// Three columns of 192-pixel cells (image, ground truth, prediction): a pixel whose prediction equals its label
// looks the same in both overlays, one that differs does not, an ignored pixel is the image darkened.
TEST(SegmentationPlot, OverlaysShowAgreementAndIgnore) {
  test::TempDir dir("segplot");
  auto images = torch::full({2, 3, 4, 4}, 200, torch::kUInt8);
  auto labels = torch::zeros({2, 4, 4}, torch::kUInt8);
  labels[0][0][0] = 255;
  auto preds = labels.clone().to(torch::kLong);
  preds[0][0][0] = 3;
  preds[1][3][3] = 1;  // wrong
  plot_segmentation({images[0], images[1]}, {labels[0], labels[1]}, {preds[0], preds[1]}, dir / "seg.png");
  const cv::Mat img = cv::imread((dir / "seg.png").string());
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 3 * 192);
  EXPECT_EQ(img.rows, 2 * 192);
  auto at = [&](int row, int column, int y, int x) { return img.at<cv::Vec3b>(row * 192 + y * 48 + 24, column * 192 + x * 48 + 24); };
  EXPECT_EQ(at(0, 0, 1, 1), cv::Vec3b(200, 200, 200));                 // the image
  EXPECT_EQ(at(0, 1, 0, 0), cv::Vec3b(60, 60, 60));                    // ignored: 0.3 x 200
  EXPECT_EQ(at(0, 1, 1, 1), at(0, 2, 1, 1));                           // right
  EXPECT_NE(at(0, 1, 1, 1), cv::Vec3b(200, 200, 200));                 // coloured
  EXPECT_NE(at(1, 1, 3, 3), at(1, 2, 3, 3));                           // wrong
  EXPECT_THROW(plot_segmentation({images[0]}, {labels[0].slice(0, 0, 3)}, {preds[0].slice(0, 0, 3)}, dir / "bad.png"),
               c10::Error);
}

}  // namespace
}  // namespace beitv2
