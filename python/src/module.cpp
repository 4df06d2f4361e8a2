// sparsebudget Python module (pybind11 + numpy): the kernel, block summaries, selection, the engine
// API (op.hpp: AttentionOp, StepPlan, run_layer, merge_states), the ISA controls, and the
// predictors. Arrays are checked (shape -> ValueError, dtype -> TypeError) and passed to the C++
// API without copies; the GIL is released while kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
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
    const bool ok = want == sb::DType::kF32
                        ? (kind == 'f' && size == 4)
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

sb::SelectionScope ScopeFromName(const std::string& s) {
  if (s == "per_kv_head") return sb::SelectionScope::kPerKvHead;
  if (s == "all_kv_heads") return sb::SelectionScope::kAllKvHeads;
  throw py::value_error("selection_scope must be 'per_kv_head' or 'all_kv_heads', got '" + s + "'");
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
      throw py::value_error("page_table[" + std::to_string(i) + "] = " + std::to_string(t[i]) + " is outside [0, " +
                            std::to_string(k.shape(0)) + ") pages of k");
  r.view.page_table = t;
  r.view.page_size = k.shape(1);
  r.view.page_stride = st[0];
  r.view.num_pages = k.shape(0);
  r.tokens = table.shape(0) * k.shape(1);
  r.keep_table = table;
  return r;
}

// The context length of a call over `kv`: the given one, or every token the arrays hold. More than
// they hold is an error (the kernel would read past them; the library cannot see array extents).
int64_t ContextLength(const KvArrays& kv, std::optional<int64_t> context_length) {
  const int64_t L = context_length ? *context_length : kv.tokens;
  if (L > kv.tokens)
    throw py::value_error("context_length " + std::to_string(L) + " exceeds the " + std::to_string(kv.tokens) +
                          " tokens k/v hold");
  return L;
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
    py::array_t<float> out(
        {static_cast<py::ssize_t>(c.num_kv_heads), static_cast<py::ssize_t>(nb), static_cast<py::ssize_t>(c.head_dim)});
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
                     const py::object& budget_obj, const std::string& scoring, float scale, const py::object& selection,
                     PySummaries* summaries, const py::object& out_obj, const std::optional<std::string>& dtype,
                     const py::object& page_table, std::optional<int64_t> context_length, int num_threads,
                     bool return_stats, const std::string& selection_scope) {
  sb::AttentionParams p;
  int64_t qts, qhs;
  RowsView(q, "q", &qts, &qhs);
  KvArrays kv = MakeKv(k, v, dtype, page_table);
  const int64_t L = ContextLength(kv, context_length);
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
  p.selection_scope = ScopeFromName(selection_scope);
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
                         const std::string& scoring, float scale, std::optional<int64_t> context_length,
                         const std::string& selection_scope) {
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
  p.selection_scope = ScopeFromName(selection_scope);
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

// ---- the engine API (op.hpp) -------------------------------------------------------------------
//
// sb.AttentionOp wraps sb::AttentionOp; sb.StepRequest carries one request's layouts as arrays (the
// shapes, strides and dtypes of, typically, its first layer's q, k and out; their data is not
// read); sb.StepPlan wraps sb::StepPlan plus what Python needs to check each layer's arrays
// against it (the planned array layouts), copies of the page tables and the step's workspace.
// Every value check of the plan and the layer is the library's (AttentionOp::Plan / RunLayer);
// the binding checks only what the library cannot see: numpy dtypes, shapes against the op's
// configuration, array extents, and that each layer's arrays have the planned layout.

struct PyStepRequest {
  py::object q, k, out, page_table, budget;
  std::optional<int64_t> context_length;
};

// An array's layout as planned: numpy type number, shape and byte strides (at most 4 axes).
struct ArrayLayout {
  int num = -1;
  int nd = 0;
  std::array<py::ssize_t, 4> shape{}, strides{};
  py::object dtype;  // for messages
};

// Only for arrays of at most 4 axes (callers check).
ArrayLayout LayoutOf(const py::array& a) {
  ArrayLayout l;
  l.num = a.dtype().num();
  l.nd = static_cast<int>(a.ndim());
  for (int i = 0; i < l.nd; ++i) {
    l.shape[static_cast<size_t>(i)] = a.shape(i);
    l.strides[static_cast<size_t>(i)] = a.strides(i);
  }
  l.dtype = a.dtype();
  return l;
}

// The C-order float32 layout of `shape` (3 axes): what run_layer allocates for an out not given.
ArrayLayout CFloat32Layout(const std::array<py::ssize_t, 4>& shape) {
  ArrayLayout l;
  l.dtype = py::dtype::of<float>();
  l.num = py::dtype::of<float>().num();
  l.nd = 3;
  l.shape = shape;
  l.strides = {shape[1] * shape[2] * 4, shape[2] * 4, 4, 0};
  return l;
}

std::string LayoutStr(const std::array<py::ssize_t, 4>& shape, const std::array<py::ssize_t, 4>& strides, int nd) {
  std::string s = "shape (";
  for (int i = 0; i < nd; ++i) s += (i ? ", " : "") + std::to_string(shape[static_cast<size_t>(i)]);
  s += nd == 1 ? ",) strides (" : ") strides (";
  for (int i = 0; i < nd; ++i) s += (i ? ", " : "") + std::to_string(strides[static_cast<size_t>(i)]);
  return s + (nd == 1 ? ",)" : ")");
}

// Same shape and strides (strides of axes of length 1 address nothing and are not compared; an
// empty array's neither). Dtypes are compared by the caller.
bool SameLayout(const ArrayLayout& got, const ArrayLayout& want) {
  if (got.nd != want.nd) return false;
  bool empty = false;
  for (int i = 0; i < want.nd; ++i) empty = empty || want.shape[static_cast<size_t>(i)] == 0;
  for (int i = 0; i < want.nd; ++i) {
    const auto u = static_cast<size_t>(i);
    if (got.shape[u] != want.shape[u]) return false;
    if (!empty && want.shape[u] > 1 && got.strides[u] != want.strides[u]) return false;
  }
  return true;
}

// `a` must have the planned layout: the same dtype (TypeError), shape and strides (ValueError).
void RequireLayout(const py::array& a, const ArrayLayout& want, const char* what) {
  if (a.dtype().num() != want.num || !NativeOrder(a.dtype()))
    throw py::type_error(std::string(what) + " dtype " + std::string(py::str(a.dtype())) + " differs from the plan's " +
                         std::string(py::str(want.dtype)));
  if (a.ndim() != want.nd)
    throw py::value_error(std::string(what) + " has shape " + ShapeStr(a) + "; the plan's layout is " +
                          LayoutStr(want.shape, want.strides, want.nd) + " (bytes)");
  const ArrayLayout got = LayoutOf(a);
  if (!SameLayout(got, want))
    throw py::value_error(std::string(what) + " has " + LayoutStr(got.shape, got.strides, got.nd) +
                          "; the plan's layout is " + LayoutStr(want.shape, want.strides, want.nd) +
                          " (strides in bytes; re-plan with this layout, or pass arrays laid out as planned)");
}

py::array AsArray(const py::handle& h, const char* what) {
  if (!py::isinstance<py::array>(h))
    throw py::type_error(std::string(what) + " must be a numpy array, got " +
                         std::string(py::str(py::type::handle_of(h).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(h);
}

// Runs f; a TypeError / ValueError it raises gets "request r: " in front (same type).
template <typename F>
void ForRequest(size_t r, F&& f) {
  try {
    f();
  } catch (const py::type_error& e) {
    throw py::type_error("request " + std::to_string(r) + ": " + e.what());
  } catch (const py::value_error& e) {
    throw py::value_error("request " + std::to_string(r) + ": " + e.what());
  }
}

struct PyStepPlan {
  struct Layouts {
    ArrayLayout q, k, out;
  };
  sb::StepPlan plan;
  std::vector<sb::StepRequest> requests;  // the last batch as given to AttentionOp::Plan
  std::vector<Layouts> layouts;           // per request: the arrays' planned layouts
  std::vector<int32_t> pages;             // copies of the page tables (the plan points into it)
  std::vector<unsigned char> workspace;   // workspace_bytes + 63, aligned in Workspace()
  std::vector<sb::LayerInput> inputs;     // one layer's pointers, refilled per run_layer
  std::mutex mu;                          // one plan() or run_layer() at a time (they share the above)

  void* Workspace() {
    const auto p = reinterpret_cast<uintptr_t>(workspace.data());
    return workspace.data() + ((64 - p % 64) % 64);
  }
};

// Locks a plan's mutex without holding the GIL while waiting (the holder may be a run_layer that
// released it).
std::unique_lock<std::mutex> LockPlan(PyStepPlan& p) {
  std::unique_lock<std::mutex> lock(p.mu, std::defer_lock);
  py::gil_scoped_release release;
  lock.lock();
  return lock;
}

void PlanOne(const sb::AttentionOpConfig& c, const PyStepRequest& in, sb::StepRequest* out, PyStepPlan::Layouts* lay,
             py::object* table) {
  const py::array q = AsArray(in.q, "q");
  int64_t qts, qhs;
  RowsView(q, "q", &qts, &qhs);
  if (q.shape(1) != c.num_q_heads || q.shape(2) != c.head_dim)
    throw py::value_error("q has shape " + ShapeStr(q) + ", the op needs [num_queries, " +
                          std::to_string(c.num_q_heads) + " q heads, head_dim " + std::to_string(c.head_dim) + "]");
  const py::array k = AsArray(in.k, "k");  // MakeKv allows 3 axes, or 4 with a page table
  KvArrays kv = MakeKv(k, std::nullopt, std::string(sb::DTypeName(c.kv_dtype)), in.page_table);
  if (kv.num_kv_heads != c.num_kv_heads || kv.head_dim != c.head_dim)
    throw py::value_error("k has " + std::to_string(kv.num_kv_heads) + " kv heads x head_dim " +
                          std::to_string(kv.head_dim) + ", the op " + std::to_string(c.num_kv_heads) + " x " +
                          std::to_string(c.head_dim));
  out->context_length = ContextLength(kv, in.context_length);
  out->num_queries = Dim32(q, 0, "q");
  out->budget = MakeBudget(in.budget);
  out->kv = kv.view;
  out->kv.k = out->kv.v = nullptr;  // layout only
  out->q = {nullptr, qts, qhs};
  lay->q = LayoutOf(q);
  lay->k = LayoutOf(k);
  if (in.out.is_none()) {
    lay->out = CFloat32Layout(lay->q.shape);
    out->out = {nullptr, q.shape(1) * q.shape(2), q.shape(2)};
  } else {
    const py::array o = AsArray(in.out, "out");
    int64_t ots, ohs;
    RowsView(o, "out", &ots, &ohs);
    if (o.shape(0) != q.shape(0) || o.shape(1) != q.shape(1) || o.shape(2) != q.shape(2))
      throw py::value_error("out must have the shape of q " + ShapeStr(q) + ", got " + ShapeStr(o));
    lay->out = LayoutOf(o);
    out->out = {nullptr, ots, ohs};
  }
  *table = kv.keep_table;
}

py::object PlanPy(const sb::AttentionOp& op, const py::sequence& requests, const py::object& plan_obj) {
  py::object obj = plan_obj.is_none() ? py::type::of<PyStepPlan>()() : plan_obj;
  if (!py::isinstance<PyStepPlan>(obj))
    throw py::type_error("plan must be a sparsebudget.StepPlan, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  PyStepPlan& p = obj.cast<PyStepPlan&>();
  auto lock = LockPlan(p);
  const size_t n = py::len(requests);
  if (n > static_cast<size_t>(sb::kMaxStepRequests)) {
    // The library's count check (and message), before any per-request work or allocation.
    Raise(op.Plan(nullptr, n > INT32_MAX ? INT32_MAX : static_cast<int32_t>(n), &p.plan));
  }
  try {
    p.requests.resize(n);
    p.layouts.resize(n);
    std::vector<py::object> tables(n);
    size_t pages = 0;
    for (size_t r = 0; r < n; ++r) {
      const py::object item = requests[r];
      if (!py::isinstance<PyStepRequest>(item))
        throw py::type_error("requests[" + std::to_string(r) + "] must be a sparsebudget.StepRequest, got " +
                             std::string(py::str(py::type::handle_of(item).attr("__name__"))));
      ForRequest(r, [&] {
        PlanOne(op.config(), item.cast<const PyStepRequest&>(), &p.requests[r], &p.layouts[r], &tables[r]);
      });
      if (tables[r]) pages += py::len(tables[r]);  // null: contiguous
    }
    // Copies of the page tables: the plan points into them until the next plan(), so the caller
    // may change its arrays meanwhile without the kernels reading an unchecked page id.
    if (pages > p.pages.size()) p.pages.resize(pages);
    size_t at = 0;
    for (size_t r = 0; r < n; ++r) {
      if (!tables[r]) continue;
      const auto t = py::reinterpret_borrow<py::array_t<int32_t>>(tables[r]);
      std::copy(t.data(), t.data() + t.size(), p.pages.data() + at);
      p.requests[r].kv.page_table = p.pages.data() + at;
      at += static_cast<size_t>(t.size());
    }
  } catch (...) {
    // Leave the plan holding no batch, as AttentionOp::Plan does on its own errors (n = -1 is
    // its documented error path).
    (void)op.Plan(nullptr, -1, &p.plan);
    throw;
  }
  Check(op.Plan(p.requests.data(), static_cast<int32_t>(n), &p.plan));
  if (p.plan.workspace_bytes() + 63 > p.workspace.size()) p.workspace.resize(p.plan.workspace_bytes() + 63);
  if (p.inputs.size() < n) p.inputs.resize(n);
  return obj;
}

py::dict LayerStatsDict(const sb::LayerStats& s) {
  py::dict d = StatsDict(s.selection);
  d["dense_requests"] = s.dense_requests;
  return d;
}

py::object RunLayerPy(const sb::AttentionOp& op, PyStepPlan& p, const py::sequence& q, const py::sequence& k,
                      const py::sequence& v, const py::sequence& summaries, const py::object& out_obj,
                      double budget_scale, bool want_lse, const std::optional<int>& num_threads, bool return_stats) {
  const int threads = num_threads ? *num_threads : 1;
  CheckThreads(threads);
  auto lock = LockPlan(p);
  const size_t n = static_cast<size_t>(p.plan.num_requests());
  std::optional<py::sequence> outs_in;
  if (!out_obj.is_none()) {
    if (!py::isinstance<py::sequence>(out_obj))
      throw py::type_error("out must be None or a sequence of arrays (or None), one per request");
    outs_in = py::reinterpret_borrow<py::sequence>(out_obj);
  }
  const std::pair<const char*, size_t> lens[] = {{"q", py::len(q)},
                                                 {"k", py::len(k)},
                                                 {"v", py::len(v)},
                                                 {"summaries", py::len(summaries)},
                                                 {"out", outs_in ? py::len(*outs_in) : n}};
  for (const auto& [name, len] : lens)
    if (len != n)
      throw py::value_error(std::string(name) + " has " + std::to_string(len) + " entries, the plan " +
                            std::to_string(n) + " requests");
  std::vector<py::object> keep;  // every array of the call, alive until it returns
  keep.reserve(5 * n);
  py::list outs(n), lses(n);
  for (size_t r = 0; r < n; ++r) {
    const PyStepPlan::Layouts& lay = p.layouts[r];
    sb::LayerInput& in = p.inputs[r];
    in = sb::LayerInput{};
    ForRequest(r, [&] {
      const py::array qa = AsArray(q[r], "q");
      RequireLayout(qa, lay.q, "q");
      const py::array ka = AsArray(k[r], "k"), va = AsArray(v[r], "v");
      RequireLayout(ka, lay.k, "k");
      RequireLayout(va, lay.k, "v (the layout of k)");
      py::array oa;
      const py::object given = outs_in ? py::object((*outs_in)[r]) : py::none();
      if (given.is_none()) {
        if (!SameLayout(CFloat32Layout(lay.q.shape), lay.out))
          throw py::value_error("the plan's out layout is not C-contiguous: pass out arrays laid out as planned");
        oa = py::array_t<float>({lay.q.shape[0], lay.q.shape[1], lay.q.shape[2]});
      } else {
        oa = AsArray(given, "out");
        if (!oa.writeable()) throw py::value_error("out must be writeable");
        RequireLayout(oa, lay.out, "out");
      }
      const py::object s = summaries[r];
      if (!s.is_none() && !py::isinstance<PySummaries>(s))
        throw py::type_error("summaries must be a sparsebudget.BlockSummaries or None, got " +
                             std::string(py::str(py::type::handle_of(s).attr("__name__"))));
      in.q = static_cast<const float*>(qa.data());
      in.out = static_cast<float*>(oa.mutable_data());
      in.k = ka.data();
      in.v = va.data();
      in.summaries = s.is_none() ? nullptr : &s.cast<PySummaries&>().s;
      if (want_lse) {
        py::array_t<float> l({lay.q.shape[0], lay.q.shape[1]});
        in.lse = l.mutable_data();
        lses[r] = l;
      }
      keep.insert(keep.end(), {qa, ka, va, s});
      outs[r] = oa;
    });
  }
  sb::LayerArgs args;
  args.inputs = p.inputs.data();
  args.budget_scale = budget_scale;
  args.workspace = p.Workspace();
  sb::LayerStats stats;
  sb::Status st;
  {
    py::gil_scoped_release release;
    std::unique_lock<std::mutex> pool_lock(g_pool_mutex, std::defer_lock);
    sb::ThreadPool* pool = nullptr;
    if (threads > 1) {
      pool_lock.lock();
      st = SharedPool(threads, &pool);
    }
    if (st.ok()) st = op.RunLayer(p.plan, args, pool, &stats);
  }
  Check(st);
  if (!want_lse && !return_stats) return std::move(outs);
  py::list result;
  result.append(outs);
  if (want_lse) result.append(lses);
  if (return_stats) result.append(LayerStatsDict(stats));
  return py::tuple(result);
}

// Rows of `a` ([..., head_dim], head_dim contiguous) as one stride: the leading axes must collapse
// into one (C order; axes of length 1 are free).
int64_t RowStride(const py::array& a, const char* what) {
  const std::vector<int64_t> st = ElementStrides(a, what);
  const py::ssize_t nd = a.ndim();
  int64_t row = a.shape(nd - 1), expect = -1;
  bool first = true;
  for (py::ssize_t i = nd - 2; i >= 0; --i) {
    if (a.shape(i) <= 1) continue;
    if (first) {
      row = st[static_cast<size_t>(i)];
      expect = row * a.shape(i);
      first = false;
    } else if (st[static_cast<size_t>(i)] != expect) {
      throw py::value_error(std::string(what) + "'s leading axes do not collapse into rows of one stride (shape " +
                            ShapeStr(a) + "); pass a C-contiguous array");
    } else {
      expect *= a.shape(i);
    }
  }
  return row;
}

py::tuple MergeStatesPy(py::array v, py::array lse, const py::array& v_other, const py::array& lse_other) {
  RequireFloat32(v, "v");
  RequireFloat32(lse, "lse");
  RequireFloat32(v_other, "v_other");
  RequireFloat32(lse_other, "lse_other");
  if (v.ndim() < 1) throw py::value_error("v must have at least one axis [..., head_dim]");
  if (!v.writeable() || !lse.writeable()) throw py::value_error("v and lse must be writeable (merged in place)");
  bool same = v_other.ndim() == v.ndim() && lse.ndim() == v.ndim() - 1 && lse_other.ndim() == v.ndim() - 1;
  for (py::ssize_t i = 0; same && i < v.ndim(); ++i) same = v_other.shape(i) == v.shape(i);
  for (py::ssize_t i = 0; same && i + 1 < v.ndim(); ++i)
    same = lse.shape(i) == v.shape(i) && lse_other.shape(i) == v.shape(i);
  if (!same)
    throw py::value_error("need v_other of v's shape " + ShapeStr(v) +
                          " and lse, lse_other of its leading shape; got " + ShapeStr(v_other) + ", " + ShapeStr(lse) +
                          ", " + ShapeStr(lse_other));
  if (!(lse.flags() & py::array::c_style) || !(lse_other.flags() & py::array::c_style))
    throw py::value_error("lse and lse_other must be C-contiguous");
  const int64_t vs = RowStride(v, "v"), vos = RowStride(v_other, "v_other");
  const int32_t d = Dim32(v, v.ndim() - 1, "v");
  const int64_t rows = static_cast<int64_t>(lse.size());
  float* vp = static_cast<float*>(v.mutable_data());
  float* lp = static_cast<float*>(lse.mutable_data());
  sb::Status st;
  {
    py::gil_scoped_release release;
    st = sb::MergeAttentionStates(rows, d, static_cast<const float*>(v_other.data()), vos,
                                  static_cast<const float*>(lse_other.data()), vp, vs, lp);
  }
  Check(st);
  return py::make_tuple(v, lse);
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
  m.def(
      "version", [] { return std::string(sb::Version()); }, "Library version, 'MAJOR.MINOR.PATCH'.");
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

  m.def(
      "isa_detected", [] { return std::string(sb::IsaName(sb::DetectedIsa())); },
      "Best ISA this CPU supports: 'scalar', 'avx2' or 'avx512'.");
  m.def(
      "isa_active", [] { return std::string(sb::IsaName(sb::ActiveIsa())); }, "ISA the kernels use now.");
  m.def(
      "isa_supported", [](const std::string& n) { return sb::IsaSupported(IsaFromName(n)); }, py::arg("isa"));
  m.def(
      "set_max_isa", [](const std::string& n) { sb::SetMaxIsa(IsaFromName(n)); }, py::arg("isa"),
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
      .def_static(
          "of_total",
          [](int64_t total_blocks, int64_t causal_blocks, int32_t sink_blocks, int32_t local_blocks) {
            return Take(sb::CheckedTotalBudget(total_blocks, causal_blocks, sink_blocks, local_blocks));
          },
          py::arg("total_blocks"), py::arg("causal_blocks"), py::arg("sink_blocks") = 1, py::arg("local_blocks") = 1,
          "Exactly total_blocks of causal_blocks (Budget::Total): an escalation rung's total, with the request's "
          "sink/local rule; dense when total_blocks >= causal_blocks.")
      .def_static("of_top_p", &sb::Budget::TopP, py::arg("top_p"), py::arg("min_blocks") = 0, py::arg("max_blocks") = 0)
      .def_property(
          "mode", [](const sb::Budget& b) { return std::string(sb::BudgetModeName(b.mode)); },
          [](sb::Budget& b, const std::string& s) { b.mode = ModeFromName(s); })
      .def_readwrite("blocks", &sb::Budget::blocks)
      .def_readwrite("fraction", &sb::Budget::fraction)
      .def_readwrite("top_p", &sb::Budget::top_p)
      .def_readwrite("min_blocks", &sb::Budget::min_blocks)
      .def_readwrite("max_blocks", &sb::Budget::max_blocks)
      .def_readwrite("sink_blocks", &sb::Budget::sink_blocks)
      .def_readwrite("local_blocks", &sb::Budget::local_blocks)
      .def("validate", [](const sb::Budget& b) { Check(sb::ValidateBudget(b)); })
      .def(
          "scaled", [](const sb::Budget& b, double scale) { return Take(sb::ScaleBudget(b, scale)); }, py::arg("scale"),
          "This budget for one layer (ScaleBudget): blocks -> ceil(blocks * scale), fraction -> min(1, fraction * "
          "scale), other modes unchanged. scale finite and > 0.")
      .def(
          "resolve",
          [](const sb::Budget& b, int64_t causal_blocks) {
            Check(sb::ValidateBudget(b));
            if (causal_blocks < 1) throw py::value_error("causal_blocks must be >= 1");
            const sb::ResolvedBudget r = sb::ResolveBudget(b, causal_blocks);
            py::dict d;
            d["forced_blocks"] = r.forced_blocks;
            d["total_blocks"] = r.total_blocks;
            d["scored_blocks"] = r.scored_blocks;
            d["clamped"] = r.clamped;
            return d;
          },
          py::arg("causal_blocks"))
      .def("__repr__", [](const sb::Budget& b) {
        return "Budget(mode='" + std::string(sb::BudgetModeName(b.mode)) + "', blocks=" + std::to_string(b.blocks) +
               ", fraction=" + std::to_string(b.fraction) + ", top_p=" + std::to_string(b.top_p) +
               ", min_blocks=" + std::to_string(b.min_blocks) + ", max_blocks=" + std::to_string(b.max_blocks) +
               ", sink_blocks=" + std::to_string(b.sink_blocks) + ", local_blocks=" + std::to_string(b.local_blocks) +
               ")";
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
      .def(
          "append",
          [](PySummaries& self, const py::array& k, std::optional<int64_t> num_tokens,
             const std::optional<std::string>& dtype, const py::object& page_table) {
            KvArrays kv = MakeKv(k, std::nullopt, dtype, page_table);
            const auto& c = self.s.config();
            if (kv.num_kv_heads != c.num_kv_heads || kv.head_dim != c.head_dim)
              throw py::value_error("k has " + std::to_string(kv.num_kv_heads) + " kv heads x head_dim " +
                                    std::to_string(kv.head_dim) + ", the summaries " + std::to_string(c.num_kv_heads) +
                                    " x " + std::to_string(c.head_dim));
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
      .def(
          "key_sum", [](const PySummaries& self) { return self.Region(&sb::BlockSummaries::key_sum); },
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
        py::arg("num_threads") = 1, py::arg("return_stats") = false, py::arg("selection_scope") = "per_kv_head",
        R"doc(Block-sparse attention of the last q.shape[0] positions over a context of K/V.

q: [num_queries, q_heads, head_dim] float32. k, v: [context_length, kv_heads, head_dim] float32 or
float16 (bf16: uint16 arrays with dtype='bf16'; q8_0: uint8 [..., head_dim / 32 * 34] ggml blocks with dtype='q8_0', see quantize_q8_0); paged: [pages, page_size, kv_heads, head_dim] with
page_table (int32, one entry per page of the context) and optionally context_length.
budget: None/'dense', a mode name or a Budget; a non-dense budget selects blocks from `summaries`
(built from k if not given); selection_scope 'all_kv_heads' gives every kv head one list (scores
summed over all heads; attention.hpp). selection=(indices [units, >=num_blocks], counts [units])
int32 attends over exactly those blocks instead. out: optional float32 array of q's shape, written in place.
Returns out (and a stats dict if return_stats). The GIL is released while the kernel runs.)doc");

  m.def("select_blocks", &SelectBlocksPy, py::arg("q"), py::arg("summaries"), py::kw_only(),
        py::arg("budget") = py::none(), py::arg("scoring") = "bound", py::arg("scale") = 0.0f,
        py::arg("context_length") = py::none(), py::arg("selection_scope") = "per_kv_head",
        "Chosen blocks for every (kv head, query block) unit: (indices [units, num_blocks] padded with -1, "
        "counts [units], stats). selection_scope 'all_kv_heads': one list per query block for every kv head.");

  // ---- the engine API (op.hpp) ----
  m.attr("MAX_STEP_REQUESTS") = sb::kMaxStepRequests;
  py::class_<PyStepRequest>(m, "StepRequest",
                            R"doc(One request of a decode step (or prefill chunk): its layouts and budget.

StepRequest(q, k, *, budget=None, context_length=None, page_table=None, out=None)
q: float32 [num_queries, q_heads, head_dim]; k: [context_length, kv_heads, head_dim] or paged
[pages, page_size, kv_heads, head_dim] with page_table (int32, one entry per page). Only their
shapes, strides and dtypes are used (typically the first layer's arrays): every layer's q, k, v and
out passed to AttentionOp.run_layer must have exactly these layouts (v: k's). num_queries =
q.shape[0]; context_length defaults to the tokens k holds. out: an array giving the output layout
(default: C-contiguous of q's shape). The fields are attributes; AttentionOp.plan validates them.)doc")
      .def(py::init([](py::object q, py::object k, py::object budget, std::optional<int64_t> context_length,
                       py::object page_table, py::object out) {
             return PyStepRequest{std::move(q),          std::move(k),      std::move(out),
                                  std::move(page_table), std::move(budget), context_length};
           }),
           py::arg("q"), py::arg("k"), py::kw_only(), py::arg("budget") = py::none(),
           py::arg("context_length") = py::none(), py::arg("page_table") = py::none(), py::arg("out") = py::none())
      .def_readwrite("q", &PyStepRequest::q)
      .def_readwrite("k", &PyStepRequest::k)
      .def_readwrite("out", &PyStepRequest::out)
      .def_readwrite("page_table", &PyStepRequest::page_table)
      .def_readwrite("budget", &PyStepRequest::budget)
      .def_readwrite("context_length", &PyStepRequest::context_length);

  py::class_<PyStepPlan>(
      m, "StepPlan",
      "A step's validated batch, reused by every layer (op.hpp StepPlan) plus its workspace. Create "
      "one and refill it with AttentionOp.plan(requests, plan) every step; it copies the page tables. "
      "plan() and run_layer() on one StepPlan take turns (a lock).")
      .def(py::init<>())
      .def(
          "reserve",
          [](PyStepPlan& p, int32_t max_requests) {
            auto lock = LockPlan(p);
            p.plan.Reserve(max_requests);
          },
          py::arg("max_requests"), "Room for max_requests (at most MAX_STEP_REQUESTS) in the C++ plan.")
      // Readers take the lock too: a plan() in another thread may be refilling (and growing) it.
      .def_property_readonly("num_requests",
                             [](PyStepPlan& p) {
                               auto lock = LockPlan(p);
                               return p.plan.num_requests();
                             })
      .def_property_readonly("workspace_bytes",
                             [](PyStepPlan& p) {
                               auto lock = LockPlan(p);
                               return p.plan.workspace_bytes();
                             })
      .def(
          "runs_dense",
          [](PyStepPlan& p, int32_t r) {
            auto lock = LockPlan(p);
            if (r < 0 || r >= p.plan.num_requests())
              throw py::index_error("request " + std::to_string(r) + " is outside [0, " +
                                    std::to_string(p.plan.num_requests()) + ")");
            return sb::PlanRunsDense(*p.plan.request_plan(r));
          },
          py::arg("request"),
          "True if request r runs dense at budget_scale 1 (dense budget, or one keeping >= 90% of the blocks).");

  py::class_<sb::AttentionOp>(
      m, "AttentionOp",
      R"doc(The attention of one model configuration (op.hpp): created once, it captures the kernels of the
ISA active now (op.isa), so every call on it runs that one ISA. Immutable; share it freely.)doc")
      .def(py::init([](int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim, int32_t block_size,
                       const std::string& kv_dtype, const std::string& scoring, float scale,
                       const std::string& selection_scope) {
             sb::AttentionOpConfig c;
             c.num_q_heads = num_q_heads;
             c.num_kv_heads = num_kv_heads;
             c.head_dim = head_dim;
             c.block_size = block_size;
             c.kv_dtype = DTypeFromName(kv_dtype);
             c.scoring = ScoringFromName(scoring);
             c.scale = scale;
             c.selection_scope = ScopeFromName(selection_scope);
             return Take(sb::AttentionOp::Create(c));
           }),
           py::arg("num_q_heads"), py::arg("num_kv_heads"), py::arg("head_dim"), py::kw_only(),
           py::arg("block_size") = 64, py::arg("kv_dtype") = "f32", py::arg("scoring") = "bound",
           py::arg("scale") = 0.0f, py::arg("selection_scope") = "per_kv_head")
      .def_property_readonly("isa", [](const sb::AttentionOp& op) { return std::string(sb::IsaName(op.isa())); })
      .def_property_readonly("num_q_heads", [](const sb::AttentionOp& op) { return op.config().num_q_heads; })
      .def_property_readonly("num_kv_heads", [](const sb::AttentionOp& op) { return op.config().num_kv_heads; })
      .def_property_readonly("head_dim", [](const sb::AttentionOp& op) { return op.config().head_dim; })
      .def_property_readonly("block_size", [](const sb::AttentionOp& op) { return op.config().block_size; })
      .def_property_readonly("kv_dtype",
                             [](const sb::AttentionOp& op) { return std::string(sb::DTypeName(op.config().kv_dtype)); })
      .def_property_readonly(
          "scoring", [](const sb::AttentionOp& op) { return std::string(sb::ScoringName(op.config().scoring)); })
      .def_property_readonly("scale", [](const sb::AttentionOp& op) { return op.config().scale; })
      .def_property_readonly(
          "selection_scope",
          [](const sb::AttentionOp& op) { return std::string(sb::SelectionScopeName(op.config().selection_scope)); })
      .def("plan", &PlanPy, py::arg("requests"), py::arg("plan") = py::none(),
           R"doc(Validates a step's batch (a sequence of StepRequest) and fills `plan` (a StepPlan; a new one if
None), which it returns. Every check of the C++ Plan runs (the message names the request and the
value); a failed plan holds no batch. O(requests + pages); allocates only when the batch outgrows
the plan's earlier ones. At most MAX_STEP_REQUESTS requests.)doc")
      .def("run_layer", &RunLayerPy, py::arg("plan"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("summaries"),
           py::kw_only(), py::arg("out") = py::none(), py::arg("budget_scale") = 1.0, py::arg("lse") = false,
           py::arg("num_threads") = py::none(), py::arg("return_stats") = false,
           R"doc(Select + attend of every request of the plan for one layer.

q, k, v, summaries: sequences with one entry per request, in the plan's order: this layer's arrays,
laid out exactly as planned (dtype, shape, strides; v as k), and its BlockSummaries (None allowed
for a request that runs dense). out: None, or a sequence of float32 arrays (or None) written in
place, laid out as planned. budget_scale: this layer's multiplier of every blocks/fraction
budget (Budget.scaled). lse=True also returns per request float32 [num_queries, q_heads]
ln sum exp(scale q.k) over the attended keys (for merge_states). num_threads: None or 1 = the
calling thread; up to MAX_THREADS on the module's persistent pool. The GIL is released while the
kernels run. Returns outs (a list), or a tuple (outs, lses?, stats?) with lse / return_stats.
Results equal sb.attention per request bit for bit (same ISA), for every num_threads.)doc");

  m.def("merge_states", &MergeStatesPy, py::arg("v"), py::arg("lse"), py::arg("v_other"), py::arg("lse_other"),
        R"doc(Folds the partial attention state (v_other, lse_other) into (v, lse) in place (op.hpp
MergeAttentionStates): v <- (a v + b v_other) / (a + b), lse <- ln(e^lse + e^lse_other), with
a, b = exp(lse - max), exp(lse_other - max). v, v_other: float32 [..., head_dim] (head_dim
contiguous, the leading axes one row stride); lse, lse_other: float32 of v's leading shape,
C-contiguous. A row with lse = -inf takes the other state. Returns (v, lse).)doc");

  // ---- predictors ----
  py::class_<sb::Predictor, PredictorPtr>(m, "Predictor", "A budget predictor (thread-safe, immutable).")
      .def_property_readonly("type", &sb::Predictor::type)
      .def("to_json", &sb::Predictor::ToJson)
      .def(
          "predict",
          [](const sb::Predictor& p, const py::object& features) {
            const sb::RequestFeatures f = FeaturesFromObject(features);
            return PredictionDict(Take(p.Predict(f)));
          },
          py::arg("features"), "Features as a dict (keys of features.hpp's JSON form) or JSON text -> prediction dict.")
      .def(
          "save", [](const sb::Predictor& p, const std::string& path) { Check(sb::SavePredictor(p, path)); },
          py::arg("path"))
      .def("__repr__", [](const sb::Predictor& p) { return "<sparsebudget.Predictor " + p.type() + ">"; });
  m.def(
      "load_predictor", [](const std::string& path) { return Share(Take(sb::LoadPredictor(path))); }, py::arg("path"));
  m.def(
      "predictor_from_json", [](const std::string& text) { return Share(Take(sb::PredictorFromJson(text))); },
      py::arg("json_text"));
  m.def("predictor_types", &sb::PredictorTypes);

  m.def(
      "probe_stats",
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

  m.def(
      "logit_stats",
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

  m.def(
      "fit_predictor",
      [](const std::string& type, const std::string& traces_path, int probe_mass, double quantile) {
        const std::vector<sb::TraceRecord> traces = Take(sb::ReadTraces(traces_path));
        sb::FitOptions o;
        o.probe_mass = probe_mass;
        o.quantile = quantile;
        return Share(Take(sb::FitPredictor(type, traces, o)));
      },
      py::arg("type"), py::arg("traces"), py::kw_only(), py::arg("probe_mass") = 90, py::arg("quantile") = 0.0,
      "Fits a predictor of `type` on a JSONL traces file.");
  m.def(
      "calibrate",
      [](const std::string& type, const std::string& traces_path, double target_degraded, double target_mean_fraction,
         double holdout, double delta, uint64_t seed, bool escalation) {
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
      py::arg("target_mean_fraction") = -1.0, py::arg("holdout") = 0.3, py::arg("delta") = 0.0, py::arg("seed") = 1,
      py::arg("escalation") = false,
      "Fits and calibrates a predictor to one target (calibration.hpp); type 'auto' chooses the signal.");

  // ---- escalation (self-check under sparsity) ----
  py::class_<sb::EscalationPolicy>(m, "EscalationPolicy",
                                   "Threshold + budget ladder (escalation.hpp); immutable, thread-safe.")
      .def(py::init([](double threshold, std::vector<double> ladder, const std::string& mode_name) {
             sb::EscalationMode mode;
             if (!sb::ParseEscalationMode(mode_name, &mode))
               throw py::value_error("mode must be 'recompute_step', 'restart_answer' or 'first_token', got '" +
                                     mode_name + "'");
             return Take(sb::EscalationPolicy::Create(threshold, std::move(ladder), mode));
           }),
           py::arg("threshold"), py::arg("ladder") = sb::EscalationPolicy::DefaultLadder(),
           py::arg("mode") = "recompute_step")
      .def_property_readonly("threshold", &sb::EscalationPolicy::threshold)
      .def_property_readonly("ladder", &sb::EscalationPolicy::ladder)
      .def_property_readonly("mode", [](const sb::EscalationPolicy& p) { return sb::EscalationModeName(p.mode()); })
      .def("next_rung", &sb::EscalationPolicy::NextRung, py::arg("total_blocks"), py::arg("causal_blocks"),
           py::arg("sink") = 1, py::arg("local") = 1)
      .def(
          "step",
          [](const sb::EscalationPolicy& p, int64_t total_blocks, int64_t causal_blocks, double top1_prob,
             int64_t answer_position, int32_t sink, int32_t local) {
            if (causal_blocks < 1 || total_blocks < 0 || answer_position < 0 || sink < 0 || local < 0)
              throw py::value_error(
                  "step: need causal_blocks >= 1 and total_blocks, answer_position, sink, local >= 0");
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
  m.def(
      "escalation_policy",
      [](const sb::Predictor& p) -> py::object {
        const sb::EscalationPolicy* e = sb::EscalationOf(p);
        if (e == nullptr) return py::none();
        return py::cast(*e);
      },
      py::arg("predictor"), "The policy of an 'escalate' predictor (calibrated with escalation), else None.");
}
