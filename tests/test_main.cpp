// gtest main: one intra-op thread (tests run two at a time under ctest -j2), a fixed seed, and *_CUDA tests
// filtered out where CUDA is absent (PyTorch's convention).
#include <gtest/gtest.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(1);
  torch::manual_seed(0);
  if (!torch::cuda::is_available()) {
    std::string filter = ::testing::GTEST_FLAG(filter);
    filter.append(filter.find('-') == std::string::npos ? "-*_CUDA" : ":*_CUDA");
    ::testing::GTEST_FLAG(filter) = filter;
  }
  return RUN_ALL_TESTS();
}
