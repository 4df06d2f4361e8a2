// Test support for the attention kernels: random K/V/Q in any layout and dtype, and a float64
// reference written independently of the library (its own fp16/bf16 decoding, its own
// selection and softmax).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "sparsebudget/sparsebudget.hpp"

namespace sbtest {

using namespace sparsebudget;

// IEEE binary16 -> double via ldexp (a different route from the library's bit manipulation).
inline double HalfToDouble(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int e = (h >> 10) & 31;
  const int m = h & 1023;
  if (e == 0) return sign * std::ldexp(m, -24);
  if (e == 31) return m ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + m, e - 25);
}
inline double BF16ToDouble(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even float -> half for finite values in the half range (test data only).
inline uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int e = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  uint32_t m = x & 0x7fffffu;
  if (e <= 0) {  // subnormal half or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    m |= 0x800000u;
    const int shift = 14 - e;
    uint32_t hm = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (hm & 1))) ++hm;
    return static_cast<uint16_t>(sign | hm);
  }
  uint32_t hm = m >> 13;
  const uint32_t rem = m & 0x1fffu;
  uint32_t he = static_cast<uint32_t>(e);
  if (rem > 0x1000u || (rem == 0x1000u && (hm & 1))) {
    if (++hm == 0x400u) {
      hm = 0;
      ++he;
    }
  }
  if (he >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | (he << 10) | hm);
}
inline uint16_t FloatToBF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(x >> 16);
}

// One request's K and V in a chosen layout, with the exact values the library will read.
struct KVData {
  DType dtype = DType::kF32;
  int64_t L = 0;
  int32_t heads = 0, dim = 0;
  std::vector<unsigned char> kbuf, vbuf;
  KVCacheView view;
  std::vector<double> k64, v64;  // [t][h][d] exact decoded values
  std::vector<int32_t> pages;

  double K(int64_t t, int32_t h, int32_t d) const { return k64[(static_cast<size_t>(t) * heads + h) * dim + d]; }
  double V(int64_t t, int32_t h, int32_t d) const { return v64[(static_cast<size_t>(t) * heads + h) * dim + d]; }
};

struct LayoutChoice {
  bool head_major = false;
  int32_t pad = 0;        // extra elements between rows (x32 values for q8_0)
  int32_t misalign = 0;   // element offset of the first element (bytes for q8_0)
  int64_t page_size = 0;  // > 0: paged, pages shuffled
};

inline void Store(DType t, unsigned char* base, int64_t idx, float x) {
  switch (t) {
    case DType::kF32: std::memcpy(base + idx * 4, &x, 4); break;
    case DType::kF16: {
      const uint16_t h = FloatToHalf(x);
      std::memcpy(base + idx * 2, &h, 2);
      break;
    }
    case DType::kBF16: {
      const uint16_t b = FloatToBF16(x);
      std::memcpy(base + idx * 2, &b, 2);
      break;
    }
    case DType::kQ8_0: std::abort();  // whole blocks only: MakeKV quantizes rows
  }
}
inline double Load(DType t, const unsigned char* base, int64_t idx) {
  switch (t) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, base + idx * 4, 4);
      return f;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, base + idx * 2, 2);
      return HalfToDouble(h);
    }
    case DType::kBF16: {
      uint16_t b;
      std::memcpy(&b, base + idx * 2, 2);
      return BF16ToDouble(b);
    }
    case DType::kQ8_0: std::abort();  // MakeKV decodes q8_0 with Q8ToDouble
  }
  return 0;
}

// One q8_0 value decoded independently of the library: fp16 scale (ldexp route) times int8.
inline double Q8ToDouble(const unsigned char* base, int64_t idx) {
  const unsigned char* blk = base + idx / 32 * 34;
  uint16_t h;
  std::memcpy(&h, blk, 2);
  const auto q = static_cast<int8_t>(blk[2 + idx % 32]);
  return HalfToDouble(h) * q;
}

// Fills K/V with N(0, sigma) values (K gets per-token scale variety so block scores differ).
inline KVData MakeKV(std::mt19937_64& rng, DType dtype, int64_t L, int32_t heads, int32_t dim, const LayoutChoice& lay,
                     double sigma = 1.0) {
  KVData kv;
  kv.dtype = dtype;
  kv.L = L;
  kv.heads = heads;
  kv.dim = dim;
  const bool q8 = dtype == DType::kQ8_0;
  const int64_t pad = q8 ? 32 * lay.pad : lay.pad;  // q8_0 strides are multiples of 32 values
  int64_t ts, hs, page_stride = 0, tokens_in_layout = L;
  int64_t npages = 0;
  if (lay.page_size > 0) {
    npages = (L + lay.page_size - 1) / lay.page_size;
    tokens_in_layout = lay.page_size;
  }
  if (lay.head_major) {
    ts = dim + pad;
    hs = ts * tokens_in_layout + pad;
  } else {
    hs = dim + pad;
    ts = hs * heads + pad;
  }
  int64_t extent = (tokens_in_layout - 1) * ts + (heads - 1) * hs + dim;
  if (tokens_in_layout <= 0) extent = q8 ? 32 : 1;
  int64_t total;
  if (lay.page_size > 0) {
    page_stride = extent + pad;
    // One spare page so the table is a real permutation with a hole.
    total = page_stride * (npages + 1);
    kv.pages.resize(static_cast<size_t>(npages));
    std::vector<int32_t> perm(static_cast<size_t>(npages + 1));
    for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int32_t>(i);
    // A separate generator: the values must not depend on the layout.
    std::mt19937_64 page_rng(static_cast<uint64_t>(L) * 31 + 7);
    std::shuffle(perm.begin(), perm.end(), page_rng);
    for (int64_t i = 0; i < npages; ++i) kv.pages[static_cast<size_t>(i)] = perm[static_cast<size_t>(i)];
  } else {
    total = extent;
  }
  const size_t lead = q8 ? static_cast<size_t>(lay.misalign) : static_cast<size_t>(lay.misalign) * DTypeSize(dtype);
  const size_t bytes = lead + static_cast<size_t>(q8 ? DTypeBytes(dtype, total) + 34
                                                     : (total + 1) * static_cast<int64_t>(DTypeSize(dtype)));
  kv.kbuf.assign(bytes, 0);
  kv.vbuf.assign(bytes, 0);
  unsigned char* kb = kv.kbuf.data() + lead;
  unsigned char* vb = kv.vbuf.data() + lead;
  kv.k64.assign(static_cast<size_t>(L) * heads * dim, 0.0);
  kv.v64.assign(kv.k64.size(), 0.0);
  std::normal_distribution<float> nd(0.0f, static_cast<float>(sigma));
  std::uniform_real_distribution<float> scale_d(0.3f, 2.0f);
  std::vector<float> krow(static_cast<size_t>(dim)), vrow(static_cast<size_t>(dim));
  for (int64_t t = 0; t < L; ++t) {
    const float tscale = scale_d(rng);
    for (int32_t h = 0; h < heads; ++h) {
      int64_t idx0;
      if (lay.page_size > 0) {
        idx0 = kv.pages[static_cast<size_t>(t / lay.page_size)] * page_stride + (t % lay.page_size) * ts + h * hs;
      } else {
        idx0 = t * ts + h * hs;
      }
      for (int32_t d = 0; d < dim; ++d) {
        krow[static_cast<size_t>(d)] = nd(rng) * tscale;
        vrow[static_cast<size_t>(d)] = nd(rng);
      }
      if (q8) {
        // The library's quantizer (its own round-trip test checks it); decoding below is ours.
        if (!QuantizeQ8_0(krow.data(), dim, kb + DTypeBytes(dtype, idx0)).ok() ||
            !QuantizeQ8_0(vrow.data(), dim, vb + DTypeBytes(dtype, idx0)).ok())
          std::abort();
      }
      for (int32_t d = 0; d < dim; ++d) {
        const int64_t idx = idx0 + d;
        const size_t r = (static_cast<size_t>(t) * heads + h) * dim + d;
        if (q8) {
          kv.k64[r] = Q8ToDouble(kb, idx);
          kv.v64[r] = Q8ToDouble(vb, idx);
        } else {
          Store(dtype, kb, idx, krow[static_cast<size_t>(d)]);
          Store(dtype, vb, idx, vrow[static_cast<size_t>(d)]);
          kv.k64[r] = Load(dtype, kb, idx);
          kv.v64[r] = Load(dtype, vb, idx);
        }
      }
    }
  }
  kv.view.k = kb;
  kv.view.v = vb;
  kv.view.dtype = dtype;
  kv.view.token_stride = ts;
  kv.view.head_stride = hs;
  if (lay.page_size > 0) {
    kv.view.page_table = kv.pages.data();
    kv.view.page_size = lay.page_size;
    kv.view.page_stride = page_stride;
    kv.view.num_pages = npages + 1;  // the pool holds one spare page (the shuffle's)
  }
  return kv;
}

// Queries [nq][hq][dim] with a token stride padding and a misaligned start.
struct QData {
  std::vector<float> buf;
  QueryView view;
  int32_t nq = 0, heads = 0, dim = 0;
  double Q(int32_t i, int32_t h, int32_t d) const {
    return view.data[i * view.token_stride + h * view.head_stride + d];
  }
};
inline QData MakeQ(std::mt19937_64& rng, int32_t nq, int32_t heads, int32_t dim, int32_t pad, int32_t misalign,
                   double sigma = 1.0) {
  QData q;
  q.nq = nq;
  q.heads = heads;
  q.dim = dim;
  const int64_t hs = dim + pad, ts = hs * heads;
  q.buf.assign(static_cast<size_t>(ts * nq + misalign + 1), 0.0f);
  std::normal_distribution<float> nd(0.0f, static_cast<float>(sigma));
  for (auto& x : q.buf) x = nd(rng);
  q.view.data = q.buf.data() + misalign;
  q.view.token_stride = ts;
  q.view.head_stride = hs;
  return q;
}

struct OutData {
  std::vector<float> buf;
  OutputView view;
  float At(int32_t i, int32_t h, int32_t d) const {
    return view.data[i * view.token_stride + h * view.head_stride + d];
  }
};
inline OutData MakeOut(int32_t nq, int32_t heads, int32_t dim, int32_t misalign) {
  OutData o;
  o.buf.assign(static_cast<size_t>(nq) * heads * dim + static_cast<size_t>(misalign) + 1, NAN);
  o.view.data = o.buf.data() + misalign;
  o.view.token_stride = static_cast<int64_t>(heads) * dim;
  o.view.head_stride = dim;
  return o;
}

// float64 attention of query (i, hq) over the tokens of `blocks` (all causal blocks if empty).
inline void RefAttend(const KVData& kv, const QData& q, int32_t i, int32_t hq, int32_t group, int64_t L, int32_t B,
                      double scale, const std::vector<int32_t>& blocks, std::vector<double>* out,
                      double* max_abs_v = nullptr) {
  const int32_t h = hq / group;
  const int64_t pos = L - q.nq + i;
  std::vector<int64_t> toks;
  auto add_block = [&](int64_t b) {
    for (int64_t t = b * B; t < (b + 1) * B && t < L; ++t)
      if (t <= pos) toks.push_back(t);
  };
  if (blocks.empty()) {
    for (int64_t b = 0; b <= pos / B; ++b) add_block(b);
  } else {
    for (int32_t b : blocks) add_block(b);
  }
  std::vector<double> s(toks.size());
  double mx = -INFINITY;
  for (size_t j = 0; j < toks.size(); ++j) {
    double acc = 0;
    for (int32_t d = 0; d < kv.dim; ++d) acc += q.Q(i, hq, d) * kv.K(toks[j], h, d);
    s[j] = acc * scale;
    mx = std::max(mx, s[j]);
  }
  double z = 0;
  for (auto& x : s) {
    x = std::exp(x - mx);
    z += x;
  }
  out->assign(static_cast<size_t>(kv.dim), 0.0);
  double mv = 0;
  for (size_t j = 0; j < toks.size(); ++j)
    for (int32_t d = 0; d < kv.dim; ++d) {
      (*out)[static_cast<size_t>(d)] += s[j] / z * kv.V(toks[j], h, d);
      mv = std::max(mv, std::abs(kv.V(toks[j], h, d)));
    }
  if (max_abs_v) *max_abs_v = std::max(*max_abs_v, mv);
}

// float64 block scores of one unit (kv head h, query block qb), summed over the unit's rows.
inline std::vector<double> RefScores(const KVData& kv, const QData& q, Scoring scoring, int32_t h, int32_t group,
                                     int64_t L, int32_t B, int64_t qb) {
  const int64_t nb = qb + 1;
  const auto D = static_cast<size_t>(kv.dim);
  std::vector<double> mean(static_cast<size_t>(nb) * D), mn(mean.size()), mx(mean.size());
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t t0 = b * B, t1 = std::min<int64_t>(L, (b + 1) * B);
    for (size_t d = 0; d < D; ++d) {
      double lo = INFINITY, hi = -INFINITY, sum = 0;
      for (int64_t t = t0; t < t1; ++t) {
        const double x = kv.K(t, h, static_cast<int32_t>(d));
        lo = std::min(lo, x);
        hi = std::max(hi, x);
        sum += x;
      }
      const size_t r = static_cast<size_t>(b) * D + d;
      mean[r] = sum / static_cast<double>(t1 - t0);
      mn[r] = lo;
      mx[r] = hi;
    }
  }
  std::vector<double> sc(static_cast<size_t>(nb), 0.0);
  const int64_t first = L - q.nq;
  for (int32_t i = 0; i < q.nq; ++i) {
    if ((first + i) / B != qb) continue;
    for (int32_t g = 0; g < group; ++g) {
      const int32_t hq = h * group + g;
      for (int64_t b = 0; b < nb; ++b) {
        double acc = 0;
        for (size_t d = 0; d < D; ++d) {
          const size_t r = static_cast<size_t>(b) * D + d;
          const double qd = q.Q(i, hq, static_cast<int32_t>(d));
          acc += scoring == Scoring::kMean ? qd * mean[r] : std::max(qd * mn[r], qd * mx[r]);
        }
        sc[static_cast<size_t>(b)] += acc;
      }
    }
  }
  return sc;
}

}  // namespace sbtest
