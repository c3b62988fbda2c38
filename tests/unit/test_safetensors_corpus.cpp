// The malformed safetensors corpus (tests/data/safetensors_malformed, made by
// tests/reference/gen_malformed_safetensors.py): every file gives an IoError naming the file and saying what
// is wrong, as listed in its EXPECTED.txt.
#include <fstream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "beitv2/beitv2.h"
#include "common.h"

namespace beitv2 {
namespace {

std::filesystem::path corpus_dir() { return test::data_dir() / "safetensors_malformed"; }

/// (file name, expected substring) per line of EXPECTED.txt; '#' lines are comments.
std::vector<std::pair<std::string, std::string>> expected() {
  const auto manifest = corpus_dir() / "EXPECTED.txt";
  std::ifstream in(manifest);
  EXPECT_TRUE(in) << "cannot open " << manifest;
  std::vector<std::pair<std::string, std::string>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto tab = line.find('\t');
    EXPECT_NE(tab, std::string::npos) << manifest << ": no tab in line: " << line;
    if (tab == std::string::npos) continue;
    out.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return out;
}

TEST(SafetensorsCorpus, EveryMalformedFileGivesItsError) {
  const auto cases = expected();
  EXPECT_GE(cases.size(), 15u);
  for (const auto& [name, expect] : cases) {
    const auto path = corpus_dir() / name;
    try {
      read_safetensors(path);
      ADD_FAILURE() << name << ": read without error";
    } catch (const IoError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(path.string()), std::string::npos) << name << ": message does not name the file: " << m;
      EXPECT_NE(m.find(expect), std::string::npos) << name << ": expected '" << expect << "' in: " << m;
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": threw something other than IoError: " << e.what();
    }
  }
}

TEST(SafetensorsCorpus, ManifestListsExactlyTheFiles) {
  std::set<std::string> listed, present;
  for (const auto& [name, expect] : expected()) {
    EXPECT_TRUE(listed.insert(name).second) << "listed twice in EXPECTED.txt: " << name;
  }
  for (const auto& f : std::filesystem::directory_iterator(corpus_dir())) {
    if (f.path().filename() != "EXPECTED.txt") present.insert(f.path().filename().string());
  }
  EXPECT_EQ(listed, present) << "regenerate with: python3 tests/reference/gen_malformed_safetensors.py";
}

TEST(SafetensorsCorpus, DeeplyNestedHeaderIsRejectedWithoutRecursion) {
  // 1M nested arrays (2 MB, too big for the corpus) used to overflow the stack in the error message's dump().
  const size_t depth = 1'000'000;
  std::string h = R"({"a":{"dtype":"F32","shape":[)" + std::string(depth, '[') + std::string(depth, ']') +
                  R"(],"data_offsets":[0,0]}})";
  std::string bytes(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i, n >>= 8) bytes[i] = static_cast<char>(n & 0xff);
  bytes += h;
  try {
    parse_safetensors(bytes.data(), bytes.size(), "deep.safetensors");
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("deep.safetensors: header nests deeper than"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace beitv2
