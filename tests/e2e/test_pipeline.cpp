// The main job as a user runs it (configs/fashion_mnist/pipeline_ci.yaml: the real stage files, a few steps
// each, on 30 Fashion-MNIST images per class): every stage runs, an interrupted stage resumes, a finished
// pipeline reruns at once, and the report holds the whole table and its figures.
#include <sys/wait.h>

#include <fstream>
#include <regex>

#include "beitv2/core/fs.h"
#include "common.h"

namespace beitv2 {
namespace {

struct Run {
  int rc;
  std::string out;
};

Run pipeline(const std::filesystem::path& out_dir, const std::filesystem::path& data, const std::string& extra = "") {
  test::TempDir tmp("pipeline_out");
  const std::string cmd = "cd " + test::source_dir().string() + " && " + std::string(BEITV2_BIN_DIR) +
                          "/beitv2-pipeline --config configs/fashion_mnist/pipeline_ci.yaml --set out_dir=" +
                          out_dir.string() + " --set train_data=" + (data / "train").string() +
                          " --set val_data=" + (data / "val").string() + " " + extra + " > " +
                          (tmp / "out").string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(tmp / "out")};
}

// The top-1 figure of a report table row, e.g. "| (b) linear probe, BEiT v2 | top-1 41.00% (...) | 3s |".
double row_top1(const std::string& table, const std::string& row) {
  std::smatch m;
  const std::regex re("\\| " + std::regex_replace(row, std::regex(R"([()])"), R"(\$&)") + R"( \| top-1 ([0-9.]+)%)");
  if (!std::regex_search(table, m, re)) return -1;
  return std::stod(m[1]);
}

TEST(Pipeline, RunsResumesAndReports) {
  const auto data = test::fashion_mnist(30);
  test::TempDir dir("pipeline");
  const auto out = dir / "run";

  // Interrupted inside the first stage: a clean stop with a checkpoint.
  auto r = pipeline(out, data, "--stop-after 5");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("stopped in stage teacher"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(out / "teacher/classifier.safetensors"));

  // The rerun resumes that stage and runs the rest.
  r = pipeline(out, data);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from"), std::string::npos) << r.out;
  for (const char* f : {"teacher/classifier.safetensors", "tokenizer/tokenizer.safetensors",
                        "pretrain/backbone.safetensors", "probe_random/probe_results.tsv",
                        "probe_beitv2/probe_results.tsv", "probe_teacher/probe_results.tsv",
                        "probe_pixels/probe_results.tsv", "finetune_scratch/classifier.safetensors",
                        "finetune_beitv2/classifier.safetensors", "confusion_finetune_beitv2.png", "report.md"}) {
    EXPECT_TRUE(std::filesystem::exists(out / f)) << f;
  }
  const std::string report = read_file(out / "report.md");
  for (const char* row : {"(a) linear probe, random backbone", "(b) linear probe, BEiT v2",
                          "(e) linear probe, teacher", "(f) linear probe, raw pixels", "(c) fine-tune from scratch",
                          "(d) fine-tune from BEiT v2"}) {
    const double top1 = row_top1(report, row);
    EXPECT_GE(top1, 0.0) << row << "\n" << report;
    EXPECT_LE(top1, 100.0) << row;
  }
  // 30 images per class and a probe on raw pixels: clearly above chance (10%) even at this size.
  EXPECT_GT(row_top1(report, "(f) linear probe, raw pixels"), 40.0) << report;
  EXPECT_NE(report.find("codebook usage"), std::string::npos);
  EXPECT_NE(report.find("val MIM accuracy"), std::string::npos);
  EXPECT_NE(report.find("](confusion_finetune_beitv2.png)"), std::string::npos) << report;
  EXPECT_NE(report.find("](tokenizer/plots/codebook_usage.png)"), std::string::npos) << report;
  EXPECT_NE(report.find("](pretrain/plots/mim.png)"), std::string::npos) << report;

  // A finished pipeline: every stage is done, nothing trains again.
  const auto before = std::filesystem::last_write_time(out / "teacher/classifier.safetensors");
  r = pipeline(out, data);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out.find("step 1/"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pipeline: finetune_beitv2 done"), std::string::npos) << r.out;
  EXPECT_EQ(std::filesystem::last_write_time(out / "teacher/classifier.safetensors"), before);
}

TEST(Pipeline, BadStageConfigIsNamedBeforeAnyTraining) {
  test::TempDir dir("pipeline_bad");
  const auto data = test::fashion_mnist(30);
  auto r = pipeline(dir / "run", data, "--set finetune.config=configs/fashion_mnist/nope.yaml");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("finetune.config"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nope.yaml"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "run/teacher"));
}

}  // namespace
}  // namespace beitv2
