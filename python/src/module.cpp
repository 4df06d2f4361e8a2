// sparsebudget Python module (pybind11 + numpy): the kernel, block summaries, selection, the ISA
// controls, and the predictors. Arrays are checked (shape -> ValueError, dtype -> TypeError) and
// passed to the C++ API without copies; the GIL is released while kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "sparsebudget/calibration.hpp"
#include "sparsebudget/escalation.hpp"
#include "sparsebudget/features.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/probe.hpp"
#include "sparsebudget/sparsebudget.hpp"
#include "sparsebudget/traces.hpp"

namespace py = pybind11;
namespace sb = sparsebudget;

namespace {

// Library errors: bad values -> ValueError, missing things -> FileNotFoundError, I/O -> OSError,
// anything else -> RuntimeError. The message is the library's (it names the bad value).
[[noreturn]] void Raise(const sb::Status& st) {
  PyObject* type = PyExc_RuntimeError;
  switch (st.code()) {
    case sb::StatusCode::kInvalidArgument:
    case sb::StatusCode::kOutOfRange:
    case sb::StatusCode::kParseError: type = PyExc_ValueError; break;
    case sb::StatusCode::kNotFound: type = PyExc_FileNotFoundError; break;
    case sb::StatusCode::kIoError: type = PyExc_OSError; break;
    default: break;
  }
  PyErr_SetString(type, st.ToString().c_str());
  throw py::error_already_set();
}
void Check(const sb::Status& st) {
  if (!st.ok()) Raise(st);
}
template <typename T>
T Take(sb::Expected<T> e) {
  if (!e.ok()) Raise(e.status());
  return std::move(e).value();
}

std::string ShapeStr(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

sb::Isa IsaFromName(const std::string& name) { return Take(sb::ParseIsa(name.c_str())); }

// The kernels read memory in the machine's byte order: a byte-swapped array ('>f4' on x86) would
// be read as garbage, so every array check rejects it.
bool NativeOrder(const py::dtype& d) {
  const char b = d.byteorder();
#if PY_LITTLE_ENDIAN
  return b != '>';
#else
  return b != '<';
#endif
}
void RequireNativeOrder(const py::array& a, const char* what) {
  if (!NativeOrder(a.dtype()))
    throw py::type_error(std::string(what) + " must be in the machine's byte order, got " +
                         std::string(py::str(a.dtype())) + " (use .astype(a.dtype.newbyteorder('=')))");
}

sb::DType DTypeFromName(const std::string& n) {
  if (n == "f32" || n == "float32") return sb::DType::kF32;
  if (n == "f16" || n == "float16") return sb::DType::kF16;
  if (n == "bf16" || n == "bfloat16") return sb::DType::kBF16;
  if (n == "q8_0") return sb::DType::kQ8_0;
  throw py::value_error("dtype must be 'f32', 'f16', 'bf16' or 'q8_0', got '" + n + "'");
}

// K/V element type from the array's numpy dtype and the optional explicit name. bf16 has no numpy
// dtype: pass a uint16 view with dtype="bf16".
sb::DType KvDType(const py::array& k, const std::optional<std::string>& name) {
  RequireNativeOrder(k, "k/v");
  const char kind = k.dtype().kind();
  const auto size = k.dtype().itemsize();
  std::optional<sb::DType> from_array;
  if (kind == 'f' && size == 4) from_array = sb::DType::kF32;
  if (kind == 'f' && size == 2) from_array = sb::DType::kF16;
  if (name) {
    const sb::DType want = DTypeFromName(*name);
    if (want == sb::DType::kQ8_0) {
      if (!(kind == 'u' && size == 1))
        throw py::type_error(std::string("q8_0 k/v must be uint8 arrays of ggml's 34-byte blocks, got ") +
                             std::string(py::str(k.dtype())));
      return want;
    }
    const bool ok = want == sb::DType::kF32 ? (kind == 'f' && size == 4)
                                            : (size == 2 && (kind == 'u' || kind == 'i' || (kind == 'f' && want == sb::DType::kF16)));
    if (!ok)
      throw py::type_error(std::string("k/v dtype ") + std::string(py::str(k.dtype())) + " does not hold " +
                           sb::DTypeName(want) + " values (bf16/f16: a 2-byte array, e.g. a uint16 view)");
    return want;
  }
  if (!from_array)
    throw py::type_error("k/v must be float32 or float16 (bf16: a uint16 view with dtype='bf16'), got " +
                         std::string(py::str(k.dtype())));
  return *from_array;
}

// Strides of an array in elements; the last axis must be contiguous.
std::vector<int64_t> ElementStrides(const py::array& a, const char* what) {
  const auto item = a.itemsize();
  std::vector<int64_t> s(static_cast<size_t>(a.ndim()));
  if (a.size() == 0) {
    // numpy gives an empty array strides of 0; nothing is read or written, so report the
    // C-order strides of its shape (a zero-query call is a documented no-op).
    int64_t step = 1;
    for (py::ssize_t i = a.ndim() - 1; i >= 0; --i) {
      s[static_cast<size_t>(i)] = step;
      step *= a.shape(i) > 0 ? static_cast<int64_t>(a.shape(i)) : 1;
    }
    return s;
  }
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (a.strides(i) % item != 0 || a.strides(i) < 0)
      throw py::value_error(std::string(what) + " strides must be non-negative multiples of the item size");
    s[static_cast<size_t>(i)] = a.strides(i) / item;
  }
  if (a.ndim() > 0 && a.shape(a.ndim() - 1) > 1 && s.back() != 1)
    throw py::value_error(std::string(what) + " must be contiguous in its last axis (head_dim)");
  return s;
}

void RequireFloat32(const py::array& a, const char* what) {
  if (!(a.dtype().kind() == 'f' && a.itemsize() == 4))
    throw py::type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())));
  RequireNativeOrder(a, what);
}

// Dimension `axis` of `a` as the library's int32 (head counts, head_dim, queries): a larger one
// (a stride-0 view may claim 2^32 + 1 rows) is an error, never truncated.
int32_t Dim32(const py::array& a, py::ssize_t axis, const char* what) {
  const py::ssize_t n = a.shape(axis);
  if (n > INT32_MAX)
    throw py::value_error(std::string(what) + " has " + std::to_string(n) + " entries in axis " + std::to_string(axis) +
                          ", more than the library's limit of " + std::to_string(INT32_MAX));
  return static_cast<int32_t>(n);
}

py::array_t<int32_t> RequireInt32(const py::handle& h, const char* what) {
  // Anything that is not an ndarray is rejected before it is viewed as one.
  if (!py::isinstance<py::array>(h))
    throw py::type_error(std::string(what) + " must be an int32 numpy array, got " +
                         std::string(py::str(py::type::handle_of(h).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!(a.dtype().kind() == 'i' && a.itemsize() == 4))
    throw py::type_error(std::string(what) + " must be int32, got " + std::string(py::str(a.dtype())));
  RequireNativeOrder(a, what);
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(what) + " must be C-contiguous");
  return py::reinterpret_borrow<py::array_t<int32_t>>(a);
}

sb::Scoring ScoringFromName(const std::string& s) {
  if (s == "mean") return sb::Scoring::kMean;
  if (s == "bound") return sb::Scoring::kBound;
  throw py::value_error("scoring must be 'mean' or 'bound', got '" + s + "'");
}

sb::BudgetMode ModeFromName(const std::string& s) {
  if (s == "dense") return sb::BudgetMode::kDense;
  if (s == "blocks") return sb::BudgetMode::kBlocks;
  if (s == "fraction") return sb::BudgetMode::kFraction;
  if (s == "top_p") return sb::BudgetMode::kTopP;
  throw py::value_error("budget mode must be 'dense', 'blocks', 'fraction' or 'top_p', got '" + s + "'");
}

// A K/V pair as a KVCacheView. Contiguous: [L, hkv, d]. Paged: [pages, page_size, hkv, d] with a
// 1-D int32 page table. Returns the context length the arrays hold.
struct KvArrays {
  sb::KVCacheView view;
  int64_t tokens = 0;  // contiguous: L; paged: len(page_table) * page_size
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  py::object keep_table;
};

KvArrays MakeKv(const py::array& k, const std::optional<py::array>& v, const std::optional<std::string>& dtype,
                const py::object& page_table) {
  KvArrays r;
  r.view.dtype = KvDType(k, dtype);
  const bool paged = !page_table.is_none();
  const py::ssize_t nd = paged ? 4 : 3;
  if (k.ndim() != nd)
    throw py::value_error(std::string("k must have shape ") +
                          (paged ? "[pages, page_size, kv_heads, head_dim]" : "[context_length, kv_heads, head_dim]") +
                          ", got " + ShapeStr(k));
  if (v) {
    if (!v->dtype().is(k.dtype()))
      throw py::type_error("v dtype " + std::string(py::str(v->dtype())) + " differs from k dtype " +
                           std::string(py::str(k.dtype())));
    if (v->ndim() != k.ndim())
      throw py::value_error("v must have the shape of k " + ShapeStr(k) + ", got " + ShapeStr(*v));
    for (py::ssize_t i = 0; i < k.ndim(); ++i)
      if (v->shape(i) != k.shape(i) || v->strides(i) != k.strides(i))
        throw py::value_error("v must have the shape and strides of k " + ShapeStr(k) + ", got " + ShapeStr(*v));
  }
  std::vector<int64_t> st = ElementStrides(k, "k");
  r.view.k = k.data();
  r.view.v = v ? v->data() : k.data();
  r.num_kv_heads = Dim32(k, nd - 2, "k");
  r.head_dim = Dim32(k, nd - 1, "k");
  if (r.view.dtype == sb::DType::kQ8_0) {
    // uint8 bytes of q8_0 blocks: the last axis holds head_dim / 32 blocks of 34 bytes; strides
    // become value counts (34 bytes = 32 values).
    const int64_t last = k.shape(nd - 1);
    if (last % sb::kQ8_0BlockBytes != 0)
      throw py::value_error("q8_0 k/v: the last axis must be head_dim / 32 blocks of 34 bytes, got " +
                            std::to_string(last) + " bytes");
    r.head_dim = static_cast<int32_t>(last / sb::kQ8_0BlockBytes * sb::kQ8_0BlockValues);
    for (py::ssize_t i = 0; i + 1 < nd; ++i) {
      int64_t& x = st[static_cast<size_t>(i)];
      if (x % sb::kQ8_0BlockBytes != 0)
        throw py::value_error("q8_0 k/v strides must be whole 34-byte blocks, got " + std::to_string(x) + " bytes");
      x = x / sb::kQ8_0BlockBytes * sb::kQ8_0BlockValues;
    }
  }
  r.view.head_stride = st[static_cast<size_t>(nd - 2)];
  r.view.token_stride = st[static_cast<size_t>(nd - 3)];
  if (!paged) {
    r.tokens = k.shape(0);
    return r;
  }
  py::array_t<int32_t> table = RequireInt32(page_table, "page_table");
  if (table.ndim() != 1) throw py::value_error("page_table must be 1-D, got shape " + ShapeStr(table));
  const int32_t* t = table.data();
  for (py::ssize_t i = 0; i < table.shape(0); ++i)
    if (t[i] < 0 || t[i] >= k.shape(0))
      throw py::value_error("page_table[" + std::to_string(i) + "] = " + std::to_string(t[i]) +
                            " is outside [0, " + std::to_string(k.shape(0)) + ") pages of k");
  r.view.page_table = t;
  r.view.page_size = k.shape(1);
  r.view.page_stride = st[0];
  r.tokens = table.shape(0) * k.shape(1);
  r.keep_table = table;
  return r;
}

// q or out: [num_queries, heads, head_dim] float32, last axis contiguous.
void RowsView(const py::array& a, const char* what, int64_t* ts, int64_t* hs) {
  RequireFloat32(a, what);
  if (a.ndim() != 3)
    throw py::value_error(std::string(what) + " must have shape [num_queries, heads, head_dim], got " + ShapeStr(a));
  const std::vector<int64_t> st = ElementStrides(a, what);
  *ts = st[0];
  *hs = st[1];
}

// ---- block summaries -------------------------------------------------------------------------

struct PySummaries {
  sb::BlockSummaries s;

  // Copies one kind into a [kv_heads, blocks, head_dim] array.
  py::array_t<float> Region(const float* (sb::BlockSummaries::*get)(int32_t, int64_t) const noexcept) const {
    const auto& c = s.config();
    const int64_t nb = s.num_blocks();
    py::array_t<float> out({static_cast<py::ssize_t>(c.num_kv_heads), static_cast<py::ssize_t>(nb),
                            static_cast<py::ssize_t>(c.head_dim)});
    float* o = out.mutable_data();
    for (int32_t h = 0; h < c.num_kv_heads; ++h)
      for (int64_t b = 0; b < nb; ++b) {
        const float* src = (s.*get)(h, b);
        if (src == nullptr) throw py::value_error("these summaries do not keep this kind (mean=False or bound=False)");
        std::copy(src, src + c.head_dim, o + (h * nb + b) * c.head_dim);
      }
    return out;
  }
};

sb::Budget MakeBudget(const py::object& budget) {
  if (budget.is_none()) return sb::Budget::Dense();
  if (py::isinstance<sb::Budget>(budget)) return budget.cast<sb::Budget>();
  if (py::isinstance<py::str>(budget)) {
    sb::Budget b;
    b.mode = ModeFromName(budget.cast<std::string>());
    return b;
  }
  throw py::type_error("budget must be a sparsebudget.Budget, a mode name or None");
}

struct Selection {
  py::array_t<int32_t> indices, counts;
};

py::dict StatsDict(const sb::SelectionStats& s) {
  py::dict d;
  d["units"] = s.units;
  d["units_clamped"] = s.units_clamped;
  d["kept_blocks"] = s.kept_blocks;
  d["causal_blocks"] = s.causal_blocks;
  d["density"] = s.causal_blocks > 0 ? static_cast<double>(s.kept_blocks) / static_cast<double>(s.causal_blocks) : 0.0;
  d["dense"] = s.dense;
  return d;
}

// ---- the kernel --------------------------------------------------------------------------------

// Python calls with num_threads > 1 share one persistent pool: its threads are made when the
// requested size first changes, not per call. Calls that use it are serialised by g_pool_mutex
// (ThreadPool::Run serialises anyway); the cap keeps a typo from spawning thousands of threads.
constexpr int kMaxPythonThreads = 64;
std::mutex g_pool_mutex;
std::unique_ptr<sb::ThreadPool> g_pool;  // guarded by g_pool_mutex

void CheckThreads(int num_threads) {
  if (num_threads < 1 || num_threads > kMaxPythonThreads)
    throw py::value_error("num_threads must be in [1, " + std::to_string(kMaxPythonThreads) +
                          "] (sparsebudget.MAX_THREADS), got " + std::to_string(num_threads));
}

// The shared pool resized to num_threads (> 1); call with g_pool_mutex held.
sb::Status SharedPool(int num_threads, sb::ThreadPool** pool) {
  if (!g_pool || g_pool->size() != num_threads) {
    g_pool.reset();
    auto created = sb::ThreadPool::Create(num_threads);
    if (!created.ok()) return created.status();
    g_pool = std::move(created).value();
  }
  *pool = g_pool.get();
  return sb::OkStatus();
}

py::object Attention(const py::array& q, const py::array& k, const py::array& v, int32_t block_size,
                     const py::object& budget_obj, const std::string& scoring, float scale,
                     const py::object& selection, PySummaries* summaries, const py::object& out_obj,
                     const std::optional<std::string>& dtype, const py::object& page_table,
                     std::optional<int64_t> context_length, int num_threads, bool return_stats) {
  sb::AttentionParams p;
  int64_t qts, qhs;
  RowsView(q, "q", &qts, &qhs);
  KvArrays kv = MakeKv(k, v, dtype, page_table);
  const int64_t L = context_length ? *context_length : kv.tokens;
  if (L > kv.tokens)
    throw py::value_error("context_length " + std::to_string(L) + " exceeds the " + std::to_string(kv.tokens) +
                          " tokens k/v hold");
  if (q.shape(2) != kv.head_dim)
    throw py::value_error("q head_dim " + std::to_string(q.shape(2)) + " differs from k head_dim " +
                          std::to_string(kv.head_dim));
  p.shape.num_queries = Dim32(q, 0, "q");
  p.shape.num_q_heads = Dim32(q, 1, "q");
  p.shape.num_kv_heads = kv.num_kv_heads;
  p.shape.head_dim = kv.head_dim;
  p.shape.block_size = block_size;
  p.shape.context_length = L;
  p.kv_dtype = kv.view.dtype;
  p.scoring = ScoringFromName(scoring);
  p.scale = scale;
  p.budget = MakeBudget(budget_obj);
  if (!selection.is_none()) p.budget = sb::Budget::Dense();  // the given blocks decide
  sb::AttentionPlan plan;
  Check(sb::MakePlan(p, &plan));
  CheckThreads(num_threads);

  py::array out;
  if (out_obj.is_none()) {
    out = py::array_t<float>({q.shape(0), q.shape(1), q.shape(2)});
  } else {
    out = py::reinterpret_borrow<py::array>(out_obj);
    if (!out.writeable()) throw py::value_error("out must be writeable");
    if (out.ndim() != 3 || out.shape(0) != q.shape(0) || out.shape(1) != q.shape(1) || out.shape(2) != q.shape(2))
      throw py::value_error("out must have the shape of q " + ShapeStr(q) + ", got " + ShapeStr(out));
  }
  int64_t ots, ohs;
  RowsView(out, "out", &ots, &ohs);
  const sb::QueryView qv{static_cast<const float*>(q.data()), qts, qhs};
  const sb::OutputView ov{static_cast<float*>(out.mutable_data()), ots, ohs};
  Check(sb::ValidateViews(plan, qv, kv.view, &ov));

  sb::ConstBlockSelection csel;
  py::array_t<int32_t> sel_idx, sel_cnt;
  if (!selection.is_none()) {
    if (!py::isinstance<py::tuple>(selection))
      throw py::type_error("selection must be a tuple (indices, counts) of int32 arrays");
    py::tuple t = py::reinterpret_borrow<py::tuple>(selection);
    if (t.size() != 2) throw py::value_error("selection must be a tuple (indices, counts)");
    sel_idx = RequireInt32(t[0], "selection indices");
    sel_cnt = RequireInt32(t[1], "selection counts");
    if (sel_idx.ndim() != 2 || sel_idx.shape(0) != plan.num_units || sel_idx.shape(1) < plan.num_blocks)
      throw py::value_error("selection indices must have shape [" + std::to_string(plan.num_units) +
                            " units, >= " + std::to_string(plan.num_blocks) + " blocks], got " + ShapeStr(sel_idx));
    if (sel_cnt.ndim() != 1 || sel_cnt.shape(0) != plan.num_units)
      throw py::value_error("selection counts must have shape [" + std::to_string(plan.num_units) + "], got " +
                            ShapeStr(sel_cnt));
    csel = {sel_idx.data(), sel_cnt.data(), static_cast<int64_t>(sel_idx.shape(1))};
  }

  // Non-dense budget without summaries: build them here (O(L x kv_heads x head_dim)).
  std::optional<sb::BlockSummaries> own;
  const sb::BlockSummaries* sum = summaries != nullptr ? &summaries->s : nullptr;
  const bool need_select = selection.is_none() && p.budget.mode != sb::BudgetMode::kDense;
  std::vector<unsigned char> ws(plan.workspace_bytes + 64);
  sb::SelectionStats stats;
  sb::Status st;
  {
    py::gil_scoped_release release;
    if (need_select && sum == nullptr) {
      sb::BlockSummaries::Config c;
      c.num_kv_heads = p.shape.num_kv_heads;
      c.head_dim = p.shape.head_dim;
      c.block_size = block_size;
      c.max_tokens = L;
      c.mean = p.scoring == sb::Scoring::kMean;
      c.bound = p.scoring == sb::Scoring::kBound;
      auto e = sb::BlockSummaries::Create(c);
      if (e.ok()) {
        own.emplace(std::move(e).value());
        st = own->Append(kv.view, L);
        sum = &*own;
      } else {
        st = e.status();
      }
    }
    if (st.ok()) {
      std::unique_lock<std::mutex> lock(g_pool_mutex, std::defer_lock);
      sb::ThreadPool* pool = nullptr;
      if (num_threads > 1) {
        lock.lock();
        st = SharedPool(num_threads, &pool);  // fails into a status, never hangs
      }
      if (st.ok() && selection.is_none())
        st = sb::SparseAttention(plan, qv, kv.view, sum, ov, ws.data(), pool, &stats);
      else if (st.ok())
        st = sb::Attend(plan, qv, kv.view, csel, ov, ws.data(), pool);
    }
  }
  Check(st);
  if (return_stats) return py::make_tuple(out, StatsDict(stats));
  return out;
}

py::tuple SelectBlocksPy(const py::array& q, PySummaries& summaries, const py::object& budget_obj,
                         const std::string& scoring, float scale, std::optional<int64_t> context_length) {
  int64_t qts, qhs;
  RowsView(q, "q", &qts, &qhs);
  const auto& c = summaries.s.config();
  sb::AttentionParams p;
  p.shape.num_queries = Dim32(q, 0, "q");
  p.shape.num_q_heads = Dim32(q, 1, "q");
  p.shape.num_kv_heads = c.num_kv_heads;
  p.shape.head_dim = c.head_dim;
  p.shape.block_size = c.block_size;
  p.shape.context_length = context_length ? *context_length : summaries.s.num_tokens();
  p.scoring = ScoringFromName(scoring);
  p.scale = scale;
  p.budget = MakeBudget(budget_obj);
  if (q.shape(2) != c.head_dim)
    throw py::value_error("q head_dim " + std::to_string(q.shape(2)) + " differs from the summaries' " +
                          std::to_string(c.head_dim));
  sb::AttentionPlan plan;
  Check(sb::MakePlan(p, &plan));
  py::array_t<int32_t> idx({static_cast<py::ssize_t>(plan.num_units), static_cast<py::ssize_t>(plan.num_blocks)});
  py::array_t<int32_t> cnt(static_cast<py::ssize_t>(plan.num_units));
  std::fill(idx.mutable_data(), idx.mutable_data() + idx.size(), -1);
  std::vector<unsigned char> ws(plan.workspace_bytes + 64);
  sb::SelectionStats stats;
  const sb::QueryView qv{static_cast<const float*>(q.data()), qts, qhs};
  const sb::BlockSelection sel{idx.mutable_data(), cnt.mutable_data(), plan.num_blocks};
  sb::Status st;
  {
    py::gil_scoped_release release;
    st = sb::SelectBlocks(plan, qv, summaries.s, sel, ws.data(), &stats);
  }
  Check(st);
  return py::make_tuple(idx, cnt, StatsDict(stats));
}

// ---- predictors ---------------------------------------------------------------------------------

sb::RequestFeatures FeaturesFromObject(const py::object& f) {
  if (py::isinstance<py::str>(f)) return Take(sb::FeaturesFromJson(f.cast<std::string>()));
  if (!py::isinstance<py::dict>(f)) throw py::type_error("features must be a dict or a JSON string");
  const std::string text = py::module_::import("json").attr("dumps")(f).cast<std::string>();
  return Take(sb::FeaturesFromJson(text));
}

py::dict PredictionDict(const sb::Prediction& p) {
  py::dict d;
  d["budget"] = p.budget;
  d["fraction"] = p.fraction;
  d["total_blocks"] = p.total_blocks;
  d["causal_blocks"] = p.causal_blocks;
  d["estimate_blocks"] = p.estimate_blocks;
  d["clamped"] = p.clamped;
  d["fallback"] = p.fallback;
  return d;
}

using PredictorPtr = std::shared_ptr<sb::Predictor>;

PredictorPtr Share(std::unique_ptr<sb::Predictor> p) { return PredictorPtr(std::move(p)); }

}  // namespace

// The compiled half of the `sparsebudget` package (python/sparsebudget/__init__.py re-exports it).
PYBIND11_MODULE(_core, m) {
  m.doc() = "sparsebudget: per-request sparse-attention budgets and the block-sparse CPU kernel";
  m.attr("__version__") = sb::Version();
  m.attr("MAX_THREADS") = kMaxPythonThreads;
  m.def("version", [] { return std::string(sb::Version()); }, "Library version, 'MAJOR.MINOR.PATCH'.");
  m.def(
      "quantize_q8_0",
      [](const py::array& x) {
        RequireFloat32(x, "x");
        if (x.ndim() < 1) throw py::value_error("x must have at least one axis");
        const auto c = py::array::ensure(x, py::array::c_style);
        const int64_t n = static_cast<int64_t>(c.size());
        const int64_t last = c.shape(c.ndim() - 1);
        if (last % sb::kQ8_0BlockValues != 0)
          throw py::value_error("the last axis of x must be a multiple of 32, got " + std::to_string(last));
        std::vector<py::ssize_t> shape(c.shape(), c.shape() + c.ndim());
        shape.back() = static_cast<py::ssize_t>(last / sb::kQ8_0BlockValues * sb::kQ8_0BlockBytes);
        py::array_t<uint8_t> out(shape);
        if (n > 0) Check(sb::QuantizeQ8_0(static_cast<const float*>(c.data()), n, out.mutable_data()));
        return out;
      },
      py::arg("x"),
      "fp32 [..., n] (n a multiple of 32) -> uint8 [..., n / 32 * 34]: ggml's q8_0 blocks (fp16 scale + 32 int8).");
  m.def(
      "dequantize_q8_0",
      [](const py::array& b) {
        if (!(b.dtype().kind() == 'u' && b.itemsize() == 1)) throw py::type_error("q8_0 blocks must be uint8");
        if (b.ndim() < 1) throw py::value_error("blocks must have at least one axis");
        const auto c = py::array::ensure(b, py::array::c_style);
        const int64_t last = c.shape(c.ndim() - 1);
        if (last % sb::kQ8_0BlockBytes != 0)
          throw py::value_error("the last axis must be a multiple of 34 bytes, got " + std::to_string(last));
        std::vector<py::ssize_t> shape(c.shape(), c.shape() + c.ndim());
        shape.back() = static_cast<py::ssize_t>(last / sb::kQ8_0BlockBytes * sb::kQ8_0BlockValues);
        py::array_t<float> out(shape);
        const int64_t n = static_cast<int64_t>(out.size());
        sb::ToFloat32(c.data(), sb::DType::kQ8_0, n, out.mutable_data());
        return out;
      },
      py::arg("blocks"), "uint8 q8_0 blocks [..., m * 34] -> fp32 [..., m * 32] (exact).");

  m.def("isa_detected", [] { return std::string(sb::IsaName(sb::DetectedIsa())); },
        "Best ISA this CPU supports: 'scalar', 'avx2' or 'avx512'.");
  m.def("isa_active", [] { return std::string(sb::IsaName(sb::ActiveIsa())); }, "ISA the kernels use now.");
  m.def("isa_supported", [](const std::string& n) { return sb::IsaSupported(IsaFromName(n)); }, py::arg("isa"));
  m.def("set_max_isa", [](const std::string& n) { sb::SetMaxIsa(IsaFromName(n)); }, py::arg("isa"),
        "Caps the ISA of later kernel calls (process-wide, like SPARSEBUDGET_MAX_ISA).");

  py::class_<sb::Budget>(m, "Budget", "A budget: which blocks the kernel keeps (see budget.hpp).")
      .def(py::init([](const std::string& mode, int64_t blocks, double fraction, double top_p, int64_t min_blocks,
                       int64_t max_blocks, int32_t sink_blocks, int32_t local_blocks) {
             sb::Budget b;
             b.mode = ModeFromName(mode);
             b.blocks = blocks;
             b.fraction = fraction;
             b.top_p = top_p;
             b.min_blocks = min_blocks;
             b.max_blocks = max_blocks;
             b.sink_blocks = sink_blocks;
             b.local_blocks = local_blocks;
             Check(sb::ValidateBudget(b));
             return b;
           }),
           py::arg("mode") = "dense", py::arg("blocks") = 0, py::arg("fraction") = 1.0, py::arg("top_p") = 0.9,
           py::arg("min_blocks") = 0, py::arg("max_blocks") = 0, py::arg("sink_blocks") = 1,
           py::arg("local_blocks") = 1)
      .def_static("dense", &sb::Budget::Dense)
      .def_static("of_blocks", &sb::Budget::Blocks, py::arg("blocks"), "Scored blocks besides sink and local.")
      .def_static("of_fraction", &sb::Budget::Fraction, py::arg("fraction"))
      .def_static("of_top_p", &sb::Budget::TopP, py::arg("top_p"), py::arg("min_blocks") = 0, py::arg("max_blocks") = 0)
      .def_property("mode", [](const sb::Budget& b) { return std::string(sb::BudgetModeName(b.mode)); },
                    [](sb::Budget& b, const std::string& s) { b.mode = ModeFromName(s); })
      .def_readwrite("blocks", &sb::Budget::blocks)
      .def_readwrite("fraction", &sb::Budget::fraction)
      .def_readwrite("top_p", &sb::Budget::top_p)
      .def_readwrite("min_blocks", &sb::Budget::min_blocks)
      .def_readwrite("max_blocks", &sb::Budget::max_blocks)
      .def_readwrite("sink_blocks", &sb::Budget::sink_blocks)
      .def_readwrite("local_blocks", &sb::Budget::local_blocks)
      .def("validate", [](const sb::Budget& b) { Check(sb::ValidateBudget(b)); })
      .def("resolve", [](const sb::Budget& b, int64_t causal_blocks) {
             Check(sb::ValidateBudget(b));
             if (causal_blocks < 1) throw py::value_error("causal_blocks must be >= 1");
             const sb::ResolvedBudget r = sb::ResolveBudget(b, causal_blocks);
             py::dict d;
             d["forced_blocks"] = r.forced_blocks;
             d["total_blocks"] = r.total_blocks;
             d["scored_blocks"] = r.scored_blocks;
             d["clamped"] = r.clamped;
             return d;
           }, py::arg("causal_blocks"))
      .def("__repr__", [](const sb::Budget& b) {
        return "Budget(mode='" + std::string(sb::BudgetModeName(b.mode)) + "', blocks=" + std::to_string(b.blocks) +
               ", fraction=" + std::to_string(b.fraction) + ", top_p=" + std::to_string(b.top_p) +
               ", min_blocks=" + std::to_string(b.min_blocks) + ", max_blocks=" + std::to_string(b.max_blocks) +
               ", sink_blocks=" + std::to_string(b.sink_blocks) + ", local_blocks=" + std::to_string(b.local_blocks) + ")";
      });

  py::class_<PySummaries>(m, "BlockSummaries",
                          "Per-block key summaries of one request's K (sum, min, max per block and kv head).")
      .def(py::init([](int32_t num_kv_heads, int32_t head_dim, int32_t block_size, int64_t max_tokens, bool mean,
                       bool bound) {
             sb::BlockSummaries::Config c;
             c.num_kv_heads = num_kv_heads;
             c.head_dim = head_dim;
             c.block_size = block_size;
             c.max_tokens = max_tokens;
             c.mean = mean;
             c.bound = bound;
             return PySummaries{Take(sb::BlockSummaries::Create(c))};
           }),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("block_size") = 64, py::arg("max_tokens"),
           py::arg("mean") = true, py::arg("bound") = true)
      .def("append",
           [](PySummaries& self, const py::array& k, std::optional<int64_t> num_tokens,
              const std::optional<std::string>& dtype, const py::object& page_table) {
             KvArrays kv = MakeKv(k, std::nullopt, dtype, page_table);
             const auto& c = self.s.config();
             if (kv.num_kv_heads != c.num_kv_heads || kv.head_dim != c.head_dim)
               throw py::value_error("k has " + std::to_string(kv.num_kv_heads) + " kv heads x head_dim " +
                                     std::to_string(kv.head_dim) + ", the summaries " +
                                     std::to_string(c.num_kv_heads) + " x " + std::to_string(c.head_dim));
             const int64_t n = num_tokens ? *num_tokens : kv.tokens;
             if (n > kv.tokens)
               throw py::value_error("num_tokens " + std::to_string(n) + " exceeds the " + std::to_string(kv.tokens) +
                                     " tokens k holds");
             sb::Status st;
             {
               py::gil_scoped_release release;
               st = self.s.Append(kv.view, n);
             }
             Check(st);
           },
           py::arg("k"), py::arg("num_tokens") = py::none(), py::arg("dtype") = py::none(),
           py::arg("page_table") = py::none(),
           "Folds tokens [num_tokens_before, num_tokens) of k ([L, kv_heads, head_dim], or paged with page_table) "
           "into the summaries. num_tokens defaults to all tokens k holds.")
      .def("reset", [](PySummaries& self) { self.s.Reset(); })
      .def_property_readonly("num_tokens", [](const PySummaries& self) { return self.s.num_tokens(); })
      .def_property_readonly("num_blocks", [](const PySummaries& self) { return self.s.num_blocks(); })
      .def_property_readonly("nbytes", [](const PySummaries& self) { return self.s.bytes(); })
      .def("key_sum", [](const PySummaries& self) { return self.Region(&sb::BlockSummaries::key_sum); },
           "Copy of the per-block key sums, [kv_heads, blocks, head_dim].")
      .def("key_min", [](const PySummaries& self) { return self.Region(&sb::BlockSummaries::key_min); })
      .def("key_max", [](const PySummaries& self) { return self.Region(&sb::BlockSummaries::key_max); })
      .def("block_counts", [](const PySummaries& self) {
        py::array_t<int64_t> out(static_cast<py::ssize_t>(self.s.num_blocks()));
        for (int64_t b = 0; b < self.s.num_blocks(); ++b) out.mutable_data()[b] = self.s.block_count(b);
        return out;
      });

  m.def("attention", &Attention, py::arg("q"), py::arg("k"), py::arg("v"), py::kw_only(), py::arg("block_size") = 64,
        py::arg("budget") = py::none(), py::arg("scoring") = "bound", py::arg("scale") = 0.0f,
        py::arg("selection") = py::none(), py::arg("summaries") = nullptr, py::arg("out") = py::none(),
        py::arg("dtype") = py::none(), py::arg("page_table") = py::none(), py::arg("context_length") = py::none(),
        py::arg("num_threads") = 1, py::arg("return_stats") = false,
        R"doc(Block-sparse attention of the last q.shape[0] positions over a context of K/V.

q: [num_queries, q_heads, head_dim] float32. k, v: [context_length, kv_heads, head_dim] float32 or
float16 (bf16: uint16 arrays with dtype='bf16'; q8_0: uint8 [..., head_dim / 32 * 34] ggml blocks with dtype='q8_0', see quantize_q8_0); paged: [pages, page_size, kv_heads, head_dim] with
page_table (int32, one entry per page of the context) and optionally context_length.
budget: None/'dense', a mode name or a Budget; a non-dense budget selects blocks from `summaries`
(built from k if not given). selection=(indices [units, >=num_blocks], counts [units]) int32 attends
over exactly those blocks instead. out: optional float32 array of q's shape, written in place.
Returns out (and a stats dict if return_stats). The GIL is released while the kernel runs.)doc");

  m.def("select_blocks", &SelectBlocksPy, py::arg("q"), py::arg("summaries"), py::kw_only(),
        py::arg("budget") = py::none(), py::arg("scoring") = "bound", py::arg("scale") = 0.0f,
        py::arg("context_length") = py::none(),
        "Chosen blocks for every (kv head, query block) unit: (indices [units, num_blocks] padded with -1, "
        "counts [units], stats).");

  // ---- predictors ----
  py::class_<sb::Predictor, PredictorPtr>(m, "Predictor", "A budget predictor (thread-safe, immutable).")
      .def_property_readonly("type", &sb::Predictor::type)
      .def("to_json", &sb::Predictor::ToJson)
      .def("predict",
           [](const sb::Predictor& p, const py::object& features) {
             const sb::RequestFeatures f = FeaturesFromObject(features);
             return PredictionDict(Take(p.Predict(f)));
           },
           py::arg("features"),
           "Features as a dict (keys of features.hpp's JSON form) or JSON text -> prediction dict.")
      .def("save", [](const sb::Predictor& p, const std::string& path) { Check(sb::SavePredictor(p, path)); },
           py::arg("path"))
      .def("__repr__", [](const sb::Predictor& p) { return "<sparsebudget.Predictor " + p.type() + ">"; });
  m.def("load_predictor", [](const std::string& path) { return Share(Take(sb::LoadPredictor(path))); },
        py::arg("path"));
  m.def("predictor_from_json", [](const std::string& text) { return Share(Take(sb::PredictorFromJson(text))); },
        py::arg("json_text"));
  m.def("predictor_types", &sb::PredictorTypes);

  m.def("probe_stats",
        [](const py::array& q_last, PySummaries& summaries, float scale) {
          RequireFloat32(q_last, "q_last");
          if (q_last.ndim() != 2 || q_last.shape(1) != summaries.s.config().head_dim)
            throw py::value_error("q_last must have shape [q_heads, head_dim], got " + ShapeStr(q_last));
          const std::vector<int64_t> st = ElementStrides(q_last, "q_last");
          const sb::ProbeStats s = Take(sb::ProbeStatsFromSummaries(summaries.s, static_cast<const float*>(q_last.data()),
                                                                    st[0], Dim32(q_last, 0, "q_last"), scale));
          py::dict d;
          d["blocks_50"] = s.blocks_50;
          d["blocks_90"] = s.blocks_90;
          d["blocks_99"] = s.blocks_99;
          d["entropy"] = s.entropy;
          d["top5_mass"] = s.top5_mass;
          d["num_blocks"] = s.num_blocks;
          return d;
        },
        py::arg("q_last"), py::arg("summaries"), py::arg("scale") = 0.0f,
        "Probe statistics of the last query ([q_heads, head_dim]) over mean summaries (probe.hpp).");

  m.def("logit_stats",
        [](const py::array& logits) {
          RequireFloat32(logits, "logits");
          if (logits.ndim() != 1 || (logits.shape(0) > 1 && logits.strides(0) != 4))
            throw py::value_error("logits must be a contiguous 1-D float32 array, got " + ShapeStr(logits));
          const sb::LogitStats s =
              Take(sb::LogitStatsFromLogits(static_cast<const float*>(logits.data()), logits.shape(0)));
          py::dict d;
          d["entropy"] = s.entropy;
          d["top1_prob"] = s.top1_prob;
          return d;
        },
        py::arg("logits"),
        "Entropy (nats) and top-1 probability of softmax(logits) for one row (features.hpp: the library's one "
        "definition, float64 accumulation).");

  m.def("fit_predictor",
        [](const std::string& type, const std::string& traces_path, int probe_mass, double quantile) {
          const std::vector<sb::TraceRecord> traces = Take(sb::ReadTraces(traces_path));
          sb::FitOptions o;
          o.probe_mass = probe_mass;
          o.quantile = quantile;
          return Share(Take(sb::FitPredictor(type, traces, o)));
        },
        py::arg("type"), py::arg("traces"), py::kw_only(), py::arg("probe_mass") = 90, py::arg("quantile") = 0.0,
        "Fits a predictor of `type` on a JSONL traces file.");
  m.def("calibrate",
        [](const std::string& type, const std::string& traces_path, double target_degraded,
           double target_mean_fraction, double holdout, double delta, uint64_t seed, bool escalation) {
          const std::vector<sb::TraceRecord> traces = Take(sb::ReadTraces(traces_path));
          sb::CalibrationOptions o;
          o.escalation = escalation;
          o.target_degraded = target_degraded;
          o.target_mean_fraction = target_mean_fraction;
          o.holdout = holdout;
          o.delta = delta;
          o.seed = seed;
          sb::CalibrationResult r = Take(sb::Calibrate(type, nullptr, traces, o));
          py::dict d;
          d["predictor"] = Share(std::move(r.predictor));
          d["method"] = r.method;
          d["chosen_value"] = r.chosen_value;
          d["fit_mean_fraction"] = r.fit_mean_fraction;
          d["holdout_mean_fraction"] = r.holdout_mean_fraction;
          d["holdout_degraded_share"] = r.holdout_degraded_share;
          d["holdout_miss_share"] = r.holdout_miss_share;
          d["num_fit"] = r.num_fit;
          d["num_holdout"] = r.num_holdout;
          d["summary"] = r.summary;
          d["signal"] = r.signal;
          d["selection"] = r.selection;
          d["abstained_cells"] = r.abstained_cells;
          d["escalation_threshold"] = r.escalation_threshold;
          return d;
        },
        py::arg("type"), py::arg("traces"), py::kw_only(), py::arg("target_degraded") = -1.0,
        py::arg("target_mean_fraction") = -1.0, py::arg("holdout") = 0.3, py::arg("delta") = 0.0,
        py::arg("seed") = 1, py::arg("escalation") = false,
        "Fits and calibrates a predictor to one target (calibration.hpp); type 'auto' chooses the signal.");

  // ---- escalation (self-check under sparsity) ----
  py::class_<sb::EscalationPolicy>(m, "EscalationPolicy",
                                   "Threshold + budget ladder (escalation.hpp); immutable, thread-safe.")
      .def(py::init([](double threshold, std::vector<double> ladder, const std::string& mode) {
             if (mode != "recompute_step" && mode != "restart_answer")
               throw py::value_error("mode must be 'recompute_step' or 'restart_answer', got '" + mode + "'");
             return Take(sb::EscalationPolicy::Create(threshold, std::move(ladder),
                                                      mode == "restart_answer" ? sb::EscalationMode::kRestartAnswer
                                                                               : sb::EscalationMode::kRecomputeStep));
           }),
           py::arg("threshold"), py::arg("ladder") = sb::EscalationPolicy::DefaultLadder(),
           py::arg("mode") = "recompute_step")
      .def_property_readonly("threshold", &sb::EscalationPolicy::threshold)
      .def_property_readonly("ladder", &sb::EscalationPolicy::ladder)
      .def_property_readonly("mode", [](const sb::EscalationPolicy& p) {
        return p.mode() == sb::EscalationMode::kRestartAnswer ? "restart_answer" : "recompute_step";
      })
      .def("next_rung", &sb::EscalationPolicy::NextRung, py::arg("total_blocks"), py::arg("causal_blocks"),
           py::arg("sink") = 1, py::arg("local") = 1)
      .def("step",
           [](const sb::EscalationPolicy& p, int64_t total_blocks, int64_t causal_blocks, double top1_prob,
              int64_t answer_position, int32_t sink, int32_t local) {
             if (causal_blocks < 1 || total_blocks < 0 || answer_position < 0 || sink < 0 || local < 0)
               throw py::value_error("step: need causal_blocks >= 1 and total_blocks, answer_position, sink, local >= 0");
             sb::EscalationState st;
             st.total_blocks = total_blocks;
             st.causal_blocks = causal_blocks;
             const sb::EscalationDecision d = p.Step(&st, top1_prob, answer_position, sink, local);
             py::dict r;
             r["action"] = !d.recompute ? "continue" : d.restart ? "restart" : "recompute";
             r["total_blocks"] = d.total_blocks;
             return r;
           },
           py::arg("total_blocks"), py::arg("causal_blocks"), py::arg("top1_prob"), py::kw_only(),
           py::arg("answer_position") = 0, py::arg("sink") = 1, py::arg("local") = 1,
           "One decode step: {'action': 'continue'|'recompute'|'restart', 'total_blocks': budget}.");
  m.def("escalation_policy",
        [](const sb::Predictor& p) -> py::object {
          const sb::EscalationPolicy* e = sb::EscalationOf(p);
          if (e == nullptr) return py::none();
          return py::cast(*e);
        },
        py::arg("predictor"), "The policy of an 'escalate' predictor (calibrated with escalation), else None.");
}
