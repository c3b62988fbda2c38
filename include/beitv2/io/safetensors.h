#pragma once
// safetensors (https://github.com/huggingface/safetensors) reading and writing, our own implementation.
//
// Layout: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}
// then the data buffer. Offsets are relative to the buffer; tensors must tile it exactly (no holes, no
// overlaps), as the reference implementation requires. Every violation throws IoError naming the file.

#include <torch/types.h>

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>

namespace beitv2 {

/// Tensors by name, in name order.
using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct SafetensorsFile {
  TensorMap tensors;
  Metadata metadata;
};

/// Reads a .safetensors file into CPU tensors. Throws IoError ("<file>: <what is wrong>").
SafetensorsFile read_safetensors(const std::filesystem::path& path);

/// Parses an in-memory safetensors image; `label` names it in errors (the fuzz target's entry point).
SafetensorsFile parse_safetensors(const char* data, size_t size, const std::string& label);

/// Writes tensors (any device; copied to CPU, made contiguous) atomically. Supported dtypes: F64, F32, F16,
/// BF16, I64, I32, I16, I8, U8, BOOL.
void write_safetensors(const std::filesystem::path& path, const TensorMap& tensors, const Metadata& metadata = {});

}  // namespace beitv2
