// Links beitv2::beitv2 from an installed package: builds a registered tiny ViT, runs a real photo through it.
#include <beitv2/beitv2.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer IMAGE\n";
    return 2;
  }
  auto vit = beitv2::create_vit("vit_test_tiny");
  vit->eval();
  auto img = beitv2::data::resize_center_crop(beitv2::data::decode_rgb(argv[1]), 32, 32, cv::INTER_CUBIC);
  auto x = beitv2::data::normalize_images(beitv2::data::to_uint8_batch({img}), beitv2::data::kImagenetMean,
                                          beitv2::data::kImagenetStd);
  auto f = vit->forward(x);
  std::cout << "beitv2 " << beitv2::kVersion << " features " << f.sizes() << "\n";
  return f.sizes() == torch::IntArrayRef({1, 32}) && f.isfinite().all().item<bool>() ? 0 : 1;
}
