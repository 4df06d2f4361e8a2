#include "tiny_model.hpp"

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tinymodel {

using namespace sparsebudget;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<const RowMat>;
using MapM = Eigen::Map<RowMat>;

namespace {

Status Err(StatusCode c, const std::string& m) { return Status(c, m); }

// y[n][out] = x[n][in] * W^T with W [out][in] row-major.
void Linear(const float* x, int64_t n, int in, const std::vector<float>& w, int out, float* y) {
  MapM(y, n, out).noalias() = MapC(x, n, in) * MapC(w.data(), out, in).transpose();
}

void RmsNorm(const float* x, int64_t n, int d, const std::vector<float>& w, float eps, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    double ss = 0;
    for (int j = 0; j < d; ++j) ss += static_cast<double>(xi[j]) * xi[j];
    const float r = 1.0f / std::sqrt(static_cast<float>(ss / d) + eps);
    for (int j = 0; j < d; ++j) y[i * d + j] = xi[j] * r * w[static_cast<size_t>(j)];
  }
}

// NeoX rotate-half RoPE on [n][heads][hd] rows at positions pos0..pos0+n-1; angles in float64.
void Rope(float* x, int64_t n, int heads, int hd, int64_t pos0, double theta) {
  const int half = hd / 2;
  for (int64_t i = 0; i < n; ++i) {
    for (int f = 0; f < half; ++f) {
      const double ang = static_cast<double>(pos0 + i) * std::pow(theta, -2.0 * f / hd);
      const float c = static_cast<float>(std::cos(ang)), s = static_cast<float>(std::sin(ang));
      for (int h = 0; h < heads; ++h) {
        float* r = x + (i * heads + h) * hd;
        const float a = r[f], b = r[f + half];
        r[f] = a * c - b * s;
        r[f + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace

Expected<std::shared_ptr<const Model>> Model::Load(const std::string& dir) {
  auto model = std::make_shared<Model>();
  {
    std::ifstream f(dir + "/config.json");
    if (!f) return Err(StatusCode::kNotFound, "cannot open " + dir + "/config.json");
    nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
    if (j.is_discarded()) return Err(StatusCode::kParseError, dir + "/config.json is not valid JSON");
    try {
      Config& c = model->cfg_;
      c.vocab_size = j.at("vocab_size").get<int>();
      c.n_layers = j.at("n_layers").get<int>();
      c.d_model = j.at("d_model").get<int>();
      c.n_heads = j.at("n_heads").get<int>();
      c.n_kv_heads = j.at("n_kv_heads").get<int>();
      c.head_dim = j.at("head_dim").get<int>();
      c.d_ff = j.at("d_ff").get<int>();
      c.rope_theta = j.at("rope_theta").get<double>();
      c.norm_eps = j.at("norm_eps").get<float>();
    } catch (const std::exception& e) {
      return Err(StatusCode::kParseError, dir + "/config.json: " + e.what());
    }
  }
  std::ifstream f(dir + "/model.safetensors", std::ios::binary);
  if (!f) return Err(StatusCode::kNotFound, "cannot open " + dir + "/model.safetensors");
  uint64_t hlen = 0;
  f.read(reinterpret_cast<char*>(&hlen), 8);
  if (!f || hlen > (uint64_t{1} << 26)) return Err(StatusCode::kParseError, "bad safetensors header length");
  std::string header(hlen, '\0');
  f.read(header.data(), static_cast<std::streamsize>(hlen));
  nlohmann::json h = nlohmann::json::parse(header, nullptr, false);
  if (!f || h.is_discarded()) return Err(StatusCode::kParseError, "bad safetensors header");
  std::stringstream rest;
  rest << f.rdbuf();
  const std::string data = rest.str();

  auto tensor = [&](const std::string& name, size_t expect, std::vector<float>* out) -> Status {
    if (!h.contains(name)) return Err(StatusCode::kNotFound, "tensor " + name + " missing");
    const auto& t = h[name];
    const std::string dt = t.at("dtype").get<std::string>();
    const auto off = t.at("data_offsets").get<std::vector<uint64_t>>();
    const size_t elem = dt == "F32" ? 4 : 2;
    if (off.size() != 2 || off[1] < off[0] || off[1] > data.size() || (off[1] - off[0]) != expect * elem)
      return Err(StatusCode::kParseError, "tensor " + name + " has the wrong size or offsets");
    if (dt != "F32" && dt != "F16" && dt != "BF16")
      return Err(StatusCode::kParseError, "tensor " + name + " has unsupported dtype " + dt);
    out->resize(expect);
    ToFloat32(data.data() + off[0],
              dt == "F32"   ? DType::kF32
              : dt == "F16" ? DType::kF16
                            : DType::kBF16,
              static_cast<int64_t>(expect), out->data());
    return OkStatus();
  };
  const Config& c = model->cfg_;
  const auto d = static_cast<size_t>(c.d_model), hq = static_cast<size_t>(c.n_heads * c.head_dim),
             hk = static_cast<size_t>(c.n_kv_heads * c.head_dim), ff = static_cast<size_t>(c.d_ff);
  try {
    if (Status s = tensor("tok_emb.weight", static_cast<size_t>(c.vocab_size) * d, &model->tok_emb); !s.ok()) return s;
    if (Status s = tensor("norm.weight", d, &model->final_norm); !s.ok()) return s;
    model->layers.resize(static_cast<size_t>(c.n_layers));
    for (int i = 0; i < c.n_layers; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      LayerWeights& L = model->layers[static_cast<size_t>(i)];
      for (auto [name, n, dst] :
           std::vector<std::tuple<const char*, size_t, std::vector<float>*>>{{"attn_norm.weight", d, &L.attn_norm},
                                                                             {"mlp_norm.weight", d, &L.mlp_norm},
                                                                             {"wq.weight", hq * d, &L.wq},
                                                                             {"wk.weight", hk * d, &L.wk},
                                                                             {"wv.weight", hk * d, &L.wv},
                                                                             {"wo.weight", d * hq, &L.wo},
                                                                             {"w_gate.weight", ff * d, &L.w_gate},
                                                                             {"w_up.weight", ff * d, &L.w_up},
                                                                             {"w_down.weight", d * ff, &L.w_down}}) {
        if (Status s = tensor(p + name, n, dst); !s.ok()) return s;
      }
    }
  } catch (const std::exception& e) {
    return Err(StatusCode::kParseError, std::string("safetensors header: ") + e.what());
  }
  return std::shared_ptr<const Model>(std::move(model));
}

Session::Session(std::shared_ptr<const Model> model, int64_t max_tokens, int32_t block_size, ThreadPool* pool)
    : m_(std::move(model)), max_tokens_(max_tokens), block_(block_size), pool_(pool) {
  const Config& c = m_->config();
  const auto per_layer = static_cast<size_t>(max_tokens) * static_cast<size_t>(c.n_kv_heads * c.head_dim);
  k_.assign(static_cast<size_t>(c.n_layers), std::vector<float>(per_layer));
  v_.assign(static_cast<size_t>(c.n_layers), std::vector<float>(per_layer));
  for (int l = 0; l < c.n_layers; ++l)
    sums_.push_back(std::move(*BlockSummaries::Create({c.n_kv_heads, c.head_dim, block_size, max_tokens, true, true})));
  last_q_.assign(static_cast<size_t>(c.n_layers), std::vector<float>(static_cast<size_t>(c.n_heads * c.head_dim)));
  AttentionOpConfig oc;
  oc.num_q_heads = c.n_heads;
  oc.num_kv_heads = c.n_kv_heads;
  oc.head_dim = c.head_dim;
  oc.block_size = block_size;
  oc.kv_dtype = DType::kF32;
  oc.scoring = Scoring::kBound;
  auto op = AttentionOp::Create(oc);
  if (op.ok())
    op_ = *op;
  else
    init_ = op.status();
  plan_.Reserve(1);
}

void Session::Truncate(int64_t n) {
  if (n >= len_) return;
  len_ = n;
  const Config& c = m_->config();
  for (int l = 0; l < c.n_layers; ++l) {
    auto& s = sums_[static_cast<size_t>(l)];
    s.Reset();
    const KVCacheView kv{k_[static_cast<size_t>(l)].data(), v_[static_cast<size_t>(l)].data(), DType::kF32,
                         c.n_kv_heads * c.head_dim, c.head_dim};
    (void)s.Append(kv, n);
  }
}

Expected<std::vector<float>> Session::Prefill(const std::vector<int32_t>& tokens) {
  return Forward(tokens.data(), static_cast<int64_t>(tokens.size()), Budget::Dense(), nullptr, nullptr);
}

Expected<std::vector<float>> Session::Decode(int32_t token, const Budget& budget, SelectionStats* stats,
                                             double* attn_seconds) {
  return Forward(&token, 1, budget, stats, attn_seconds);
}

Expected<std::vector<float>> Session::Forward(const int32_t* tokens, int64_t n, const Budget& budget,
                                              SelectionStats* stats, double* attn_seconds) {
  const Config& c = m_->config();
  if (n <= 0) return Err(StatusCode::kInvalidArgument, "no tokens");
  if (len_ + n > max_tokens_)
    return Err(StatusCode::kOutOfRange,
               "session holds " + std::to_string(max_tokens_) + " tokens, asked for " + std::to_string(len_ + n));
  const int d = c.d_model, hd = c.head_dim, hq = c.n_heads, hk = c.n_kv_heads;
  std::vector<float> x(static_cast<size_t>(n * d)), h(x.size()), q(static_cast<size_t>(n * hq * hd)), o(q.size()),
      g(static_cast<size_t>(n * c.d_ff)), u(g.size()), tmp(x.size());
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return Err(StatusCode::kOutOfRange, "token " + std::to_string(tokens[i]) + " outside the vocabulary");
    std::memcpy(&x[static_cast<size_t>(i * d)], &m_->tok_emb[static_cast<size_t>(tokens[i]) * static_cast<size_t>(d)],
                static_cast<size_t>(d) * 4);
  }
  const int64_t L = len_ + n;
  if (!init_.ok()) return init_;
  // One step of one request: planned once, run by every layer (layout token-major [t][head][d]).
  StepRequest req;
  req.context_length = L;
  req.num_queries = static_cast<int32_t>(n);
  req.budget = budget;
  req.kv.dtype = DType::kF32;
  req.kv.token_stride = hk * hd;
  req.kv.head_stride = hd;
  req.q = {nullptr, hq * hd, hd};
  req.out = {nullptr, hq * hd, hd};
  if (Status s = op_.Plan(&req, 1, &plan_); !s.ok()) return s;
  if (workspace_.size() < plan_.workspace_bytes() + 64) workspace_.resize(plan_.workspace_bytes() + 64);
  void* ws = workspace_.data() + (64 - reinterpret_cast<uintptr_t>(workspace_.data()) % 64) % 64;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& W = m_->layers[static_cast<size_t>(l)];
    float* kc = k_[static_cast<size_t>(l)].data();
    float* vc = v_[static_cast<size_t>(l)].data();
    RmsNorm(x.data(), n, d, W.attn_norm, c.norm_eps, h.data());
    Linear(h.data(), n, d, W.wq, hq * hd, q.data());
    Linear(h.data(), n, d, W.wk, hk * hd, kc + len_ * hk * hd);
    Linear(h.data(), n, d, W.wv, hk * hd, vc + len_ * hk * hd);
    Rope(q.data(), n, hq, hd, len_, c.rope_theta);
    Rope(kc + len_ * hk * hd, n, hk, hd, len_, c.rope_theta);
    const KVCacheView kv{kc, vc, DType::kF32, hk * hd, hd};
    BlockSummaries& sum = sums_[static_cast<size_t>(l)];
    if (Status s = sum.Append(kv, L); !s.ok()) return s;
    std::memcpy(last_q_[static_cast<size_t>(l)].data(), &q[static_cast<size_t>((n - 1) * hq * hd)],
                static_cast<size_t>(hq * hd) * 4);

    LayerInput in;
    in.q = q.data();
    in.out = o.data();
    in.k = kc;
    in.v = vc;
    in.summaries = &sum;
    LayerArgs args;
    args.inputs = &in;
    args.workspace = ws;
    LayerStats ls;
    const auto t0 = std::chrono::steady_clock::now();
    Status s = op_.RunLayer(plan_, args, pool_, &ls);
    if (attn_seconds) *attn_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!s.ok()) return s;
    const SelectionStats& st = ls.selection;
    if (stats) {
      stats->units += st.units;
      stats->kept_blocks += st.kept_blocks;
      stats->causal_blocks += st.causal_blocks;
      stats->units_clamped += st.units_clamped;
    }
    Linear(o.data(), n, hq * hd, W.wo, d, tmp.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];

    RmsNorm(x.data(), n, d, W.mlp_norm, c.norm_eps, h.data());
    Linear(h.data(), n, d, W.w_gate, c.d_ff, g.data());
    Linear(h.data(), n, d, W.w_up, c.d_ff, u.data());
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    Linear(g.data(), n, c.d_ff, W.w_down, d, tmp.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
  }
  len_ = L;
  std::vector<float> last(static_cast<size_t>(d)), logits(static_cast<size_t>(c.vocab_size));
  RmsNorm(&x[static_cast<size_t>((n - 1) * d)], 1, d, m_->final_norm, c.norm_eps, last.data());
  Linear(last.data(), 1, d, m_->tok_emb, c.vocab_size, logits.data());
  return logits;
}

Status Session::Features(const std::vector<float>& logits, RequestFeatures* f) const {
  auto ls = LogitStatsFromLogits(logits.data(), static_cast<int64_t>(logits.size()));
  if (!ls.ok()) return ls.status();
  SetLogitFeatures(*ls, f);
  const Config& c = m_->config();
  std::vector<const BlockSummaries*> sums;
  std::vector<const float*> qs;
  for (int l = 0; l < c.n_layers; ++l) {
    sums.push_back(&sums_[static_cast<size_t>(l)]);
    qs.push_back(last_q_[static_cast<size_t>(l)].data());
  }
  auto ps = ProbeStatsFromLayers(sums.data(), qs.data(), c.n_layers, c.head_dim, c.n_heads);
  if (!ps.ok()) return ps.status();
  SetProbeFeatures(*ps, f);
  return OkStatus();
}

int32_t Argmax(const std::vector<float>& logits) {
  int32_t b = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[static_cast<size_t>(b)]) b = static_cast<int32_t>(i);
  return b;
}

}  // namespace tinymodel
