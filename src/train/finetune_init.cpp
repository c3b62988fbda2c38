// Classifier initialisation from pretrained weights (include/beitv2/train/finetune_init.h; docs/reference.md §5;
// microsoft/unilm beit2/run_class_finetuning.py, the `--finetune` block). Divergences: strict about missing and
// unknown tensors (see the header).
#include "beitv2/train/finetune_init.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <sstream>

namespace beitv2 {
namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool contains(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

// "a, b, c and 4 more".
std::string some(const std::vector<std::string>& v, size_t n = 3) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < n; ++i) out += (i ? ", " : "") + v[i];
  if (v.size() > n) out += " and " + std::to_string(v.size() - n) + " more";
  return out;
}

// Tensors of the pretraining model that a classifier never uses (docs/reference.md §5).
bool pretraining_only(const std::string& name, bool model_has_norm) {
  return name == "mask_token" || starts_with(name, "lm_head.") || starts_with(name, "cls_pt_") ||
         (!model_has_norm && starts_with(name, "norm."));
}

// Tensors a fine-tuning run expects to start fresh when the weights lack them.
bool fresh_ok(const std::string& name) {
  return starts_with(name, "head.") || starts_with(name, "fc_norm.") || starts_with(name, "norm.");
}

// FITPACK-style cubic B-spline basis values at u for knots t (degree 3): the 4 non-zero values and the span.
int64_t basis_funs(const std::vector<double>& t, int64_t n_basis, double u, double out[4]) {
  constexpr int p = 3;
  int64_t span = n_basis - 1;  // u at the right end belongs to the last span
  for (int64_t i = p; i < n_basis; ++i) {
    if (u >= t[i] && u < t[i + 1]) {
      span = i;
      break;
    }
  }
  double left[p + 1], right[p + 1];
  out[0] = 1.0;
  for (int j = 1; j <= p; ++j) {
    left[j] = u - t[span + 1 - j];
    right[j] = t[span + j] - u;
    double saved = 0.0;
    for (int r = 0; r < j; ++r) {
      const double tmp = out[r] / (right[r + 1] + left[j - r]);
      out[r] = saved + right[r + 1] * tmp;
      saved = left[j - r] * tmp;
    }
    out[j] = saved;
  }
  return span;
}

// (points x basis) collocation matrix of the interpolating cubic spline with knots at the data points
// (FITPACK's choice for s = 0: interior knots x[2..n-3], i.e. not-a-knot ends).
torch::Tensor collocation(const std::vector<double>& x, const std::vector<double>& at) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<double> t(4, x.front());
  for (int64_t i = 2; i <= n - 3; ++i) t.push_back(x[i]);
  for (int i = 0; i < 4; ++i) t.push_back(x.back());
  auto m = torch::zeros({static_cast<int64_t>(at.size()), n}, torch::kFloat64);
  auto acc = m.accessor<double, 2>();
  for (size_t r = 0; r < at.size(); ++r) {
    const double u = std::clamp(at[r], x.front(), x.back());
    double b[4];
    const int64_t span = basis_funs(t, n, u, b);
    for (int j = 0; j < 4; ++j) acc[static_cast<int64_t>(r)][span - 3 + j] = b[j];
  }
  return m;
}

}  // namespace

std::string InitReport::to_string() const {
  std::ostringstream os;
  os << "initialised from " << kind << " weights: " << taken.size() << " tensors taken, " << dropped.size()
     << " dropped, " << initialised.size() << " newly initialised";
  if (expanded_tables > 0) os << ", shared rel-pos table copied into " << expanded_tables << " blocks";
  auto list = [&os](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << "\n  " << what << ":";
    for (const auto& s : v) os << " " << s;
  };
  list("dropped", dropped);
  list("newly initialised", initialised);
  list("resized", resized);
  return os.str();
}

std::string detect_weights_kind(const TensorMap& weights) {
  bool encoder = false, mim = false;
  for (const auto& [k, _] : weights) {
    encoder = encoder || starts_with(k, "encoder.");
    mim = mim || k == "rel_pos_bias.relative_position_bias_table" || k == "mask_token" || starts_with(k, "lm_head.");
  }
  if (encoder) return "vqkd";
  return mim ? "mim" : "classifier";
}

std::vector<double> rel_pos_resize_coordinates(int64_t src_size, int64_t dst_size) {
  const int64_t half = src_size / 2;
  const double target = static_cast<double>(dst_size / 2);
  auto gp = [half](double q) { return (1.0 - std::pow(q, static_cast<double>(half))) / (1.0 - q); };
  double left = 1.01, right = 1.5, q = 0;
  while (right - left > 1e-6) {
    q = (left + right) / 2.0;
    if (gp(q) > target) {
      right = q;
    } else {
      left = q;
    }
  }
  std::vector<double> dis;
  double cur = 1;
  for (int64_t i = 0; i < half; ++i) {
    dis.push_back(cur);
    cur += std::pow(q, static_cast<double>(i + 1));
  }
  std::vector<double> x;
  for (auto it = dis.rbegin(); it != dis.rend(); ++it) x.push_back(-*it);
  x.push_back(0.0);
  x.insert(x.end(), dis.begin(), dis.end());
  return x;
}

torch::Tensor cubic_spline_matrix(const std::vector<double>& x, const std::vector<double>& at) {
  TORCH_CHECK(x.size() >= 4, "cubic_spline_matrix: a cubic spline needs at least 4 knots, got ", x.size());
  for (size_t i = 1; i < x.size(); ++i) TORCH_CHECK(x[i] > x[i - 1], "cubic_spline_matrix: knots must increase");
  const auto a = collocation(x, x);    // n x n
  const auto b = collocation(x, at);   // m x n
  // values(at) = B c with A c = z, so the matrix is B A^-1 = (A^-T B^T)^T.
  return torch::linalg_solve(a.t(), b.t()).t().contiguous();
}

torch::Tensor resize_rel_pos_table(const torch::Tensor& table, int64_t dst_rows) {
  TORCH_CHECK(table.dim() == 2, "resize_rel_pos_table: expected a (rows, heads) table, got ", table.sizes());
  constexpr int64_t extra = 3;
  const int64_t src_size = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(table.size(0) - extra))));
  const int64_t dst_size = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(dst_rows - extra))));
  TORCH_CHECK(src_size * src_size + extra == table.size(0) && dst_size * dst_size + extra == dst_rows,
              "resize_rel_pos_table: ", table.size(0), " -> ", dst_rows,
              " rows are not (2g-1)^2 + 3 of square windows");
  if (src_size == dst_size) return table;
  TORCH_CHECK(src_size >= 5, "resize_rel_pos_table: the source window (", (src_size + 1) / 2,
              " patches) is too small for a cubic spline (at least 3 patches)");
  const auto x = rel_pos_resize_coordinates(src_size, dst_size);
  std::vector<double> at;
  const double t = static_cast<double>(dst_size / 2);
  for (int64_t i = 0; i < dst_size; ++i) at.push_back(-t + static_cast<double>(i));
  const auto m = cubic_spline_matrix(x, at);  // dst x src
  const int64_t heads = table.size(1);
  const auto grid = table.slice(0, 0, src_size * src_size).to(torch::kFloat64).t().reshape({heads, src_size, src_size});
  const auto out = torch::matmul(torch::matmul(m, grid), m.t());  // heads, dst, dst
  return torch::cat({out.reshape({heads, dst_size * dst_size}).t().to(table.scalar_type()),
                     table.slice(0, src_size * src_size)}, 0);
}

torch::Tensor resize_pos_embed(const torch::Tensor& pos_embed, int64_t dst_patches) {
  TORCH_CHECK(pos_embed.dim() == 3 && pos_embed.size(0) == 1, "resize_pos_embed: expected (1, N, D), got ",
              pos_embed.sizes());
  const int64_t n = pos_embed.size(1), d = pos_embed.size(2);
  const auto dst = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(dst_patches))));
  // The extra tokens are what is left over a square grid.
  int64_t src = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
  while (src * src > n) --src;
  const int64_t extra = n - src * src;
  TORCH_CHECK(dst * dst == dst_patches && extra >= 0 && extra <= 1,
              "resize_pos_embed: cannot resize ", n, " positions to a square grid of ", dst_patches);
  if (src == dst) return pos_embed;
  auto grid = pos_embed.slice(1, extra).reshape({1, src, src, d}).permute({0, 3, 1, 2}).to(torch::kFloat32);
  grid = torch::nn::functional::interpolate(
      grid, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{dst, dst})
                .mode(torch::kBicubic).align_corners(false));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, dst * dst, d}).to(pos_embed.scalar_type());
  return torch::cat({pos_embed.slice(1, 0, extra), grid}, 1);
}

InitReport init_classifier(VisionTransformer& model, const TensorMap& weights, const InitOptions& o,
                           const std::string& source) {
  InitReport r;
  r.kind = o.kind == "auto" ? detect_weights_kind(weights) : o.kind;
  if (r.kind != "mim" && r.kind != "vqkd" && r.kind != "classifier") {
    throw std::runtime_error("init kind '" + o.kind + "': expected auto, mim, vqkd or classifier");
  }
  const ViTConfig& cfg = model->config();
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : model->named_parameters(true)) targets[p.key()] = p.value();
  for (const auto& b : model->named_buffers(true)) targets[b.key()] = b.value();
  const bool has_norm = targets.count("norm.weight") > 0;

  // The official --model_filter_name: a tokenizer's encoder.* tensors, prefix stripped.
  TensorMap w;
  for (const auto& [k, v] : weights) {
    if (r.kind != "vqkd") {
      w[k] = v;
    } else if (starts_with(k, "encoder.")) {
      w[k.substr(8)] = v;
    } else {
      r.dropped.push_back(k);
    }
  }
  auto drop = [&](const std::string& k) {
    r.dropped.push_back(k);
    w.erase(k);
  };
  for (const char* k : {"head.weight", "head.bias"}) {  // another class count: a fresh head
    if (w.count(k) && (!targets.count(k) || !w.at(k).sizes().equals(targets.at(k).sizes()))) drop(k);
  }
  // Shared table -> one copy per block.
  const std::string shared = "rel_pos_bias.relative_position_bias_table";
  if (cfg.use_rel_pos_bias && !cfg.use_shared_rel_pos_bias && w.count(shared)) {
    const auto table = w.at(shared);
    for (int64_t i = 0; i < cfg.depth; ++i) {
      w["blocks." + std::to_string(i) + ".attn.relative_position_bias_table"] = table.clone();
    }
    w.erase(shared);
    r.expanded_tables = cfg.depth;
  }
  std::vector<std::string> keys;
  for (const auto& [k, _] : w) keys.push_back(k);
  for (const auto& k : keys) {
    if (contains(k, "relative_position_index") || pretraining_only(k, has_norm)) {
      drop(k);
    } else if (contains(k, "relative_position_bias_table") && targets.count(k) &&
               w.at(k).size(0) != targets.at(k).size(0)) {
      const auto before = shape_str(w.at(k));
      w[k] = resize_rel_pos_table(w.at(k), targets.at(k).size(0));
      r.resized.push_back(k + ": " + before + " -> " + shape_str(w.at(k)));
    } else if (k == "pos_embed" && targets.count(k) && !w.at(k).sizes().equals(targets.at(k).sizes()) &&
               w.at(k).dim() == 3 && w.at(k).size(2) == targets.at(k).size(2)) {
      const auto before = shape_str(w.at(k));
      w[k] = resize_pos_embed(w.at(k), cfg.num_patches());
      r.resized.push_back(k + ": " + before + " -> " + shape_str(w.at(k)));
    }
  }

  std::vector<std::string> unexpected, mismatched, missing;
  for (const auto& [k, v] : w) {
    if (!targets.count(k)) {
      unexpected.push_back(k);
    } else if (!v.sizes().equals(targets.at(k).sizes())) {
      mismatched.push_back(k + ": weights " + shape_str(v) + " vs model " + shape_str(targets.at(k)));
    }
  }
  for (const auto& [k, _] : targets) {
    if (w.count(k) || contains(k, "relative_position_index")) continue;
    if (fresh_ok(k) || o.allow_missing) {
      r.initialised.push_back(k);
    } else {
      missing.push_back(k);
    }
  }
  std::string problems;
  auto add = [&problems](const std::string& what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    problems += (problems.empty() ? "" : "; ") + std::to_string(v.size()) + " " + what + " (" + some(v) + ")";
  };
  add("with a shape mismatch", mismatched);
  add("missing from the weights", missing);
  if (!o.allow_unexpected) add("not in the model", unexpected);
  if (!problems.empty()) {
    throw std::runtime_error("cannot initialise the classifier from " + source + " (" + r.kind + " weights): " +
                             problems + ": the weights do not fit this model's architecture (model.*)");
  }
  for (const auto& k : unexpected) drop(k);
  torch::NoGradGuard ng;
  for (auto& [k, target] : targets) {
    auto it = w.find(k);
    if (it == w.end()) continue;
    target.copy_(it->second);
    r.taken.push_back(k);
  }
  return r;
}

TensorMap to_timm_layout(const TensorMap& state) {
  TensorMap out;
  for (const auto& [k, v] : state) {
    if (!contains(k, "relative_position_index")) out[k] = v;
  }
  return out;
}

}  // namespace beitv2
