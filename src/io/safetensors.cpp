#include "beitv2/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include "beitv2/core/fs.h"

namespace beitv2 {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit
constexpr int kMaxHeaderDepth = 8;                   // a valid header nests 3 levels (object, entry, shape)
constexpr uint64_t kMaxI64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  size_t bytes;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo& dtype_by_type(torch::ScalarType t, const std::string& label, const std::string& key) {
  for (const auto& d : kDtypes) {
    if (t == d.type) return d;
  }
  throw IoError(label + ": tensor '" + key + "' has dtype " + std::string(c10::toString(t)) +
                ", which safetensors cannot store here");
}

uint64_t read_u64_le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// A JSON value for an error message, cut short: values come from untrusted files.
std::string brief(const json& j) {
  std::string s = j.dump();
  if (s.size() > 64) s = s.substr(0, 60) + " ...";
  return s;
}

uint64_t as_u64(const json& j, const std::string& label, const std::string& what) {
  if (!j.is_number_unsigned()) {
    throw IoError(label + ": " + what + " must be a non-negative integer, got " + brief(j));
  }
  return j.get<uint64_t>();
}

// Parses the header JSON, rejecting duplicate keys (nlohmann would silently keep the last one) and nesting
// deeper than kMaxHeaderDepth (nlohmann's dump(), used in error messages, recurses per level).
json parse_header(const char* first, const char* last, const std::string& label) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxHeaderDepth) {
          throw IoError(label + ": header nests deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
        }
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.back().insert(parsed.get<std::string>()).second) {
          throw IoError(label + ": header has duplicate key " + brief(parsed));
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(first, last, check);
  } catch (const json::exception& e) {
    throw IoError(label + ": header is not valid JSON: " + e.what());
  }
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

}  // namespace

SafetensorsFile parse_safetensors(const char* data, size_t size, const std::string& label) {
  if (size < 8) {
    throw IoError(label + ": " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_len = read_u64_le(data);
  if (header_len > kMaxHeaderBytes) {
    throw IoError(label + ": header length " + std::to_string(header_len) + " exceeds the 100 MiB limit");
  }
  if (header_len > size - 8) {
    throw IoError(label + ": header length " + std::to_string(header_len) + " runs past the end of the " +
                  std::to_string(size) + "-byte file (truncated?)");
  }
  if (header_len == 0 || data[8] != '{') {
    throw IoError(label + ": header does not start with '{'");
  }
  const json header = parse_header(data + 8, data + 8 + header_len, label);
  if (!header.is_object()) throw IoError(label + ": header is not a JSON object");

  const char* buffer = data + 8 + header_len;
  const uint64_t buffer_size = size - 8 - header_len;

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) throw IoError(label + ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          throw IoError(label + ": __metadata__['" + m.key() + "'] must be a string, got " + brief(m.value()));
        }
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = "tensor '" + key + "'";
    if (!v.is_object()) throw IoError(label + ": " + what + ": entry must be an object");
    for (auto f = v.begin(); f != v.end(); ++f) {
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets") {
        throw IoError(label + ": " + what + ": unknown field '" + f.key() + "'");
      }
    }
    if (!v.contains("dtype") || !v["dtype"].is_string()) {
      throw IoError(label + ": " + what + ": missing or non-string 'dtype'");
    }
    Entry e;
    e.name = key;
    e.dtype = dtype_by_name(v["dtype"].get<std::string>());
    if (!e.dtype) throw IoError(label + ": " + what + ": unsupported dtype " + brief(v["dtype"]));
    if (!v.contains("shape") || !v["shape"].is_array()) {
      throw IoError(label + ": " + what + ": missing or non-list 'shape'");
    }
    // torch needs the product of max(dim, 1) (the largest stride) in int64, even when a dim is 0.
    uint64_t numel = 1, span = 1;
    for (const auto& d : v["shape"]) {
      const uint64_t dim = as_u64(d, label, what + " shape entry");
      if (dim > kMaxI64 || span > kMaxI64 / std::max<uint64_t>(dim, 1)) {
        throw IoError(label + ": " + what + ": shape " + brief(v["shape"]) + " overflows");
      }
      span *= std::max<uint64_t>(dim, 1);
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
      throw IoError(label + ": " + what + ": 'data_offsets' must be a list [begin, end]");
    }
    e.begin = as_u64(v["data_offsets"][0], label, what + " data_offsets");
    e.end = as_u64(v["data_offsets"][1], label, what + " data_offsets");
    if (e.begin > e.end || e.end > buffer_size) {
      throw IoError(label + ": " + what + ": data_offsets [" + std::to_string(e.begin) + ", " +
                    std::to_string(e.end) + "] outside the " + std::to_string(buffer_size) +
                    "-byte data buffer (truncated?)");
    }
    if (numel > std::numeric_limits<uint64_t>::max() / e.dtype->bytes ||
        numel * e.dtype->bytes != e.end - e.begin) {
      throw IoError(label + ": " + what + ": " + std::to_string(e.end - e.begin) + " bytes for shape " +
                    brief(v["shape"]) + " of " + e.dtype->name);
    }
    entries.push_back(std::move(e));
  }

  // The tensors must tile the buffer: sorted by offset, each begins where the previous ended.
  std::vector<const Entry*> sorted;
  for (const auto& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Entry* e : sorted) {
    if (e->begin != cursor) {
      throw IoError(label + ": tensor '" + e->name + "' starts at byte " + std::to_string(e->begin) +
                    ", expected " + std::to_string(cursor) + " (overlapping tensors or a hole in the data)");
    }
    cursor = e->end;
  }
  if (cursor != buffer_size) {
    throw IoError(label + ": " + std::to_string(buffer_size - cursor) +
                  " trailing bytes after the last tensor");
  }

  for (const auto& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), buffer + e.begin, e.end - e.begin);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  return parse_safetensors(bytes.data(), bytes.size(), path.string());
}

void write_safetensors(const std::filesystem::path& path, const TensorMap& tensors, const Metadata& metadata) {
  const std::string label = path.string();
  std::vector<torch::Tensor> cpu;
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw IoError(label + ": '__metadata__' is reserved and cannot name a tensor");
    TORCH_CHECK(t.defined(), "write_safetensors: tensor '", name, "' is undefined");
    const DtypeInfo& d = dtype_by_type(t.scalar_type(), label, name);
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * d.bytes;
    header[name] = {{"dtype", d.name}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    cpu.push_back(std::move(c));
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data buffer to 8 bytes, as the Python writer does
  char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i, n >>= 8) len[i] = static_cast<char>(n & 0xff);

  AtomicFile f(path);
  f.write(len, 8);
  f.write(text.data(), text.size());
  for (const auto& c : cpu) f.write(c.data_ptr(), c.numel() * c.element_size());
  f.commit();
}

}  // namespace beitv2
