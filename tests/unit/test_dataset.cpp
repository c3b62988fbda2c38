// Datasets (folder, ImageFolder, list file) and strict decoding with the skip/fail policy and the pixel limit.
#include "data_helpers.h"

namespace beitv2 {
namespace {

using namespace beitv2::test;

// ---------------------------------------------------------------------------------------------------------
// Datasets and decoding
// ---------------------------------------------------------------------------------------------------------

TEST(DataDataset, ImageFolderFolderAndListFile) {
  test::TempDir tmp("datasets");
  const auto root = make_image_folder(tmp.path() / "train", 2);
  write_bytes(tmp.path() / "train" / "README.txt", "not an image, not in a class folder");
  const auto ds = ImageDataset::image_folder(root);
  EXPECT_EQ(ds.size(), 6);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"a_dog", "b_cat", "c_eel"}));  // sorted folder names
  EXPECT_EQ(ds.label(0), 0);
  EXPECT_EQ(ds.path(0).parent_path().filename(), "a_dog");
  EXPECT_EQ(ds.label(5), 2);
  EXPECT_NE(ds.summary().find("6 images, 3 classes"), std::string::npos) << ds.summary();

  const auto flat = ImageDataset::folder(tmp.path());
  EXPECT_EQ(flat.size(), 6);
  EXPECT_FALSE(flat.labelled());
  EXPECT_EQ(flat.label(3), -1);

  // List file: relative paths resolve against the list's folder; labels on all lines.
  fs::create_directories(tmp.path() / "lists");
  write_bytes(tmp.path() / "lists" / "l.txt", "# comment\n../train/a_dog/img0.png 4\n\n  ../train/b_cat/img1.png\t1 \n");
  const auto lst = ImageDataset::list_file(tmp.path() / "lists" / "l.txt");
  EXPECT_EQ(lst.size(), 2);
  EXPECT_EQ(lst.label(0), 4);
  EXPECT_EQ(lst.label(1), 1);
  EXPECT_EQ(lst.num_classes(), 5);
  EXPECT_EQ(lst.load(1).size(), cv::imread(lst.path(1).string()).size());
  write_bytes(tmp.path() / "lists" / "u.txt", (root / "c_eel" / "img0.png").string() + "\n");
  EXPECT_FALSE(ImageDataset::list_file(tmp.path() / "lists" / "u.txt").labelled());

  auto error_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "no error";
  };
  // Clear errors, before training: missing root, empty dataset, empty class, missing listed files, mixed labels.
  EXPECT_NE(error_of([&] { ImageDataset::image_folder(tmp.path() / "nope"); }).find("nope: no such directory"),
            std::string::npos);
  fs::create_directories(tmp.path() / "empty");
  EXPECT_NE(error_of([&] { ImageDataset::folder(tmp.path() / "empty"); }).find("no image files"), std::string::npos);
  EXPECT_NE(error_of([&] { ImageDataset::image_folder(tmp.path() / "empty"); }).find("no class folders"),
            std::string::npos);
  fs::create_directories(root / "d_void");
  EXPECT_NE(error_of([&] { ImageDataset::image_folder(root); }).find("d_void: class folder holds no image"),
            std::string::npos);
  write_bytes(tmp.path() / "lists" / "missing.txt", "../train/a_dog/img0.png 0\ngone.jpg 1\nalso_gone.png 2\n");
  const auto miss = error_of([&] { ImageDataset::list_file(tmp.path() / "lists" / "missing.txt"); });
  EXPECT_NE(miss.find("2 of 3 listed files do not exist"), std::string::npos) << miss;
  EXPECT_NE(miss.find("line 2: "), std::string::npos) << miss;
  EXPECT_NE(miss.find("gone.jpg"), std::string::npos) << miss;
  write_bytes(tmp.path() / "lists" / "mixed.txt", "../train/a_dog/img0.png 0\n../train/a_dog/img1.png\n");
  EXPECT_NE(error_of([&] { ImageDataset::list_file(tmp.path() / "lists" / "mixed.txt"); })
                .find("mixed.txt:2: has no label"),
            std::string::npos);
  write_bytes(tmp.path() / "lists" / "none.txt", "# nothing\n");
  EXPECT_NE(error_of([&] { ImageDataset::list_file(tmp.path() / "lists" / "none.txt"); }).find("names no files"),
            std::string::npos);
  EXPECT_THROW(ImageDataset::open("parquet", root), ConfigError);
  EXPECT_THROW(parse_decode_policy("ignore"), ConfigError);
  EXPECT_EQ(parse_decode_policy("fail"), DecodePolicy::kFail);
}

/// Good and bad files side by side: returns the number of bad ones.
int write_corrupt_set(const fs::path& dir) {
  fs::create_directories(dir);
  const cv::Mat img = random_rgb(40, 48, 11);
  const std::string jpg = encode(img, ".jpg"), png = encode(img, ".png");
  write_bytes(dir / "good.jpg", jpg);
  write_bytes(dir / "good.png", png);
  write_bytes(dir / "good_grey.png", encode(cv::Mat(10, 12, CV_8UC3, cv::Scalar(7, 7, 7)), ".png"));
  {  // valid JPEGs with several scans (progressive) and with restart markers: not mistaken for truncated ones
    cv::Mat bgr;
    cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> buf;
    EXPECT_TRUE(cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
    write_bytes(dir / "good_progressive.jpg", std::string(buf.begin(), buf.end()));
    EXPECT_TRUE(cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_RST_INTERVAL, 2}));
    write_bytes(dir / "good_restart.jpg", std::string(buf.begin(), buf.end()));
  }
  write_bytes(dir / "truncated.jpg", jpg.substr(0, jpg.size() / 2));          // OpenCV alone decodes this
  write_bytes(dir / "truncated_tail.jpg", jpg.substr(0, jpg.size() - 2));     // only the end marker missing
  write_bytes(dir / "truncated.png", png.substr(0, png.size() / 2));
  write_bytes(dir / "header_only.jpg", jpg.substr(0, 100));
  std::string bad_crc = png;
  bad_crc[png.size() / 2] ^= 0x55;                                           // flips bits inside IDAT
  write_bytes(dir / "corrupt_idat.png", bad_crc);
  write_bytes(dir / "garbage.jpg", std::string(500, '\x5a'));
  write_bytes(dir / "empty.png", "");
  write_bytes(dir / "text.png", "this is not a png\n");
  return 8;
}

TEST(DataDecode, CorruptAndTruncatedFilesAreRejectedNamingTheFile) {
  test::TempDir tmp("decode");
  write_corrupt_set(tmp.path());
  EXPECT_EQ(load_rgb(tmp.path() / "good.png").size(), cv::Size(48, 40));
  EXPECT_EQ(load_rgb(tmp.path() / "good.jpg").type(), CV_8UC3);
  EXPECT_EQ(load_rgb(tmp.path() / "good_grey.png").at<cv::Vec3b>(0, 0), cv::Vec3b(7, 7, 7));
  EXPECT_EQ(load_rgb(tmp.path() / "good_progressive.jpg").size(), cv::Size(48, 40));
  EXPECT_EQ(load_rgb(tmp.path() / "good_restart.jpg").size(), cv::Size(48, 40));
  // Every photo of the opencv-doc set decodes (none is mistaken for a truncated file).
  const auto photos = ImageDataset::folder(test::photos_dir());
  for (int64_t i = 0; i < photos.size(); ++i) EXPECT_NO_THROW(photos.load(i)) << photos.path(i);
  for (const char* bad : {"truncated.jpg", "truncated_tail.jpg", "truncated.png", "header_only.jpg",
                          "corrupt_idat.png", "garbage.jpg", "empty.png", "text.png", "missing.png"}) {
    try {
      load_rgb(tmp.path() / bad);
      ADD_FAILURE() << bad << " decoded";
    } catch (const DecodeError& e) {
      EXPECT_NE(std::string(e.what()).find((tmp.path() / bad).string() + ": "), std::string::npos) << e.what();
    }
  }
  // Header sizes without decoding.
  std::ifstream f(tmp.path() / "good.jpg", std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(peek_image_size(bytes).height, 40);
  EXPECT_EQ(peek_image_size(bytes).width, 48);
}

TEST(DataDecode, LoaderSkipsAndCountsBadFilesOrFailsNamingThem) {
  test::TempDir tmp("skip");
  const int bad = write_corrupt_set(tmp.path() / "x");
  auto ds = std::make_shared<const ImageDataset>(ImageDataset::folder(tmp.path()));
  ASSERT_EQ(ds->size(), 13);
  TrainTransform t;
  t.crop.size = 8;
  LoaderOptions o;
  o.batch_size = 4;
  o.drop_last = false;
  o.num_workers = 2;
  {
    Loader loader(ds->size(), train_sample_fn(ds, t), o);
    loader.start_epoch(0);
    int64_t seen = 0;
    while (auto b = loader.next()) {
      seen += b->size();
      for (int64_t i = 0; i < b->size(); ++i) {
        const std::string name = ds->path(b->indices[i].item<int64_t>()).filename().string();
        EXPECT_TRUE(name.rfind("good", 0) == 0) << "a bad file reached a batch: " << name;
      }
    }
    EXPECT_EQ(seen, 13) << "batches keep their size: skipped files are replaced";
    EXPECT_EQ(loader.skipped_count(), bad);
    loader.start_epoch(1);  // a second epoch meets the same files: still counted once each
    while (loader.next()) {
    }
    EXPECT_EQ(loader.skipped_count(), bad);
  }
  o.decode_policy = DecodePolicy::kFail;
  Loader failing(ds->size(), train_sample_fn(ds, t), o);
  failing.start_epoch(0);
  try {
    while (failing.next()) {
    }
    FAIL() << "no error with decode policy fail";
  } catch (const DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find(tmp.path().string() + "/x/"), std::string::npos) << e.what();
  }
}

/// A PNG's bytes with the IHDR width and height replaced (CRC updated): a tiny file that claims a huge image.
std::string png_claiming(const std::string& png, uint32_t width, uint32_t height) {
  std::string out = png;
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
  };
  put32(16, width);
  put32(20, height);
  uint32_t crc = 0xffffffffu;  // CRC-32 of the chunk type and data (bytes 12..28)
  for (size_t i = 12; i < 29; ++i) {
    crc ^= static_cast<uint8_t>(out[i]);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  put32(29, ~crc);
  return out;
}

TEST(DataDecode, HugeImagesAreRefusedFromTheHeaderPerThePolicy) {
  test::TempDir tmp("huge");
  const cv::Mat img = random_rgb(40, 48, 3);
  const std::string png = encode(img, ".png");
  write_bytes(tmp / "good.png", png);
  write_bytes(tmp / "huge.png", png_claiming(png, 20000, 20000));  // 400 megapixels: 1.2 GB decoded
  write_bytes(tmp / "good.jpg", encode(img, ".jpg"));
  write_bytes(tmp / "good.bmp", encode(img, ".bmp"));
  const std::string huge = read_file(tmp / "huge.png");
  ASSERT_EQ(peek_image_size(std::vector<uint8_t>(huge.begin(), huge.end())).width, 20000);
  try {
    load_rgb(tmp / "huge.png");
    FAIL() << "decoded";
  } catch (const DecodeError& e) {
    EXPECT_EQ(std::string(e.what()), (tmp / "huge.png").string() +
                                         ": image too large (20000x20000 pixels, more than the limit of 64000000)");
  }
  // The limit is an option: from the header for PNG and JPEG, after decoding for other formats; 0 disables it.
  DecodeOptions small;
  small.max_pixels = 48 * 40 - 1;
  for (const char* f : {"good.png", "good.jpg", "good.bmp"}) {
    try {
      load_rgb(tmp / f, small);
      ADD_FAILURE() << f << " decoded";
    } catch (const DecodeError& e) {
      EXPECT_NE(std::string(e.what()).find(": image too large (48x40 pixels, more than the limit of 1919)"),
                std::string::npos)
          << e.what();
    }
    small.max_pixels = 48 * 40;
    EXPECT_EQ(load_rgb(tmp / f, small).size(), cv::Size(48, 40)) << f;
    small.max_pixels = 48 * 40 - 1;
  }
  // A dataset's loads follow its options; the loader's decode policy decides: skip counts it, fail names it.
  auto ds = std::make_shared<ImageDataset>(ImageDataset::folder(tmp.path()));
  EXPECT_EQ(ds->decode_options().max_pixels, 64'000'000);
  TrainTransform t;
  t.crop.size = 8;
  LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 1;
  {
    Loader loader(ds->size(), train_sample_fn(ds, t), o);
    loader.start_epoch(0);
    int64_t seen = 0;
    while (auto b = loader.next()) seen += b->size();
    EXPECT_EQ(seen, 4) << "the huge file is replaced by a good one";
    EXPECT_EQ(loader.skipped_files(), std::vector<std::string>{(tmp / "huge.png").string() +
                                      ": image too large (20000x20000 pixels, more than the limit of 64000000)"});
  }
  o.decode_policy = DecodePolicy::kFail;
  ds->set_decode_options(DecodeOptions{3000});
  Loader failing(ds->size(), train_sample_fn(ds, t), o);
  failing.start_epoch(0);
  try {
    while (failing.next()) {
    }
    FAIL() << "no error with decode policy fail";
  } catch (const DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find("huge.png: image too large"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace beitv2
