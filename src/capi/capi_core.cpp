// C API: status strings, the thread-local last error, logging, version, ISA and budgets.
#include <atomic>
#include <cmath>
#include <mutex>
#include <string>

#include "capi/capi_internal.hpp"
#include "sparsebudget/budget.hpp"
#include "sparsebudget/isa.hpp"
#include "sparsebudget/status.hpp"
#include "sparsebudget/version.hpp"

namespace sparsebudget::capi {
namespace {

static_assert(static_cast<int>(SB_ERROR_INVALID_ARGUMENT) == static_cast<int>(StatusCode::kInvalidArgument) &&
                  static_cast<int>(SB_ERROR_OUT_OF_RANGE) == static_cast<int>(StatusCode::kOutOfRange) &&
                  static_cast<int>(SB_ERROR_NOT_FOUND) == static_cast<int>(StatusCode::kNotFound) &&
                  static_cast<int>(SB_ERROR_PARSE) == static_cast<int>(StatusCode::kParseError) &&
                  static_cast<int>(SB_ERROR_IO) == static_cast<int>(StatusCode::kIoError) &&
                  static_cast<int>(SB_ERROR_UNSUPPORTED) == static_cast<int>(StatusCode::kUnsupported) &&
                  static_cast<int>(SB_ERROR_INTERNAL) == static_cast<int>(StatusCode::kInternal),
              "sb_status must mirror StatusCode");
static_assert(static_cast<int>(SB_ISA_AVX512) == static_cast<int>(Isa::kAvx512) &&
                  static_cast<int>(SB_ISA_AVX2) == static_cast<int>(Isa::kAvx2),
              "sb_isa must mirror Isa");
static_assert(static_cast<int>(SB_BUDGET_TOP_P) == static_cast<int>(BudgetMode::kTopP) &&
                  static_cast<int>(SB_BUDGET_FRACTION) == static_cast<int>(BudgetMode::kFraction),
              "sb_budget_mode must mirror BudgetMode");
static_assert(SB_VERSION_MAJOR == kVersionMajor && SB_VERSION_MINOR == kVersionMinor &&
                  SB_VERSION_PATCH == kVersionPatch,
              "SB_VERSION_* must match version.hpp");

thread_local std::string t_last_error;

struct LogState {
  std::mutex mutex;
  sb_log_callback callback = nullptr;
  void* user_data = nullptr;
  std::atomic<int> min_level{SB_LOG_ERROR + 1};  // nothing is logged until a callback is set
};
LogState& Logger() {
  static LogState state;
  return state;
}

}  // namespace

sb_status Ok() noexcept {
  t_last_error.clear();  // keeps capacity: no allocation on the success path
  return SB_OK;
}

sb_status Fail(const char* fn, sb_status code, const std::string& message) noexcept {
  try {
    t_last_error.assign(fn);
    t_last_error.append(": ");
    t_last_error.append(message);
  } catch (...) {
    t_last_error.clear();  // no memory for the message; the status still says what happened
  }
  if (LogEnabled(SB_LOG_ERROR)) Log(SB_LOG_ERROR, t_last_error);
  return code;
}

sb_status Fail(const char* fn, const Status& status) noexcept {
  const int code = static_cast<int>(status.code());
  return Fail(fn, code >= 1 && code <= 7 ? static_cast<sb_status>(code) : SB_ERROR_INTERNAL, status.message());
}

bool LogEnabled(sb_log_level level) noexcept {
  return EnumBits(level) >= Logger().min_level.load(std::memory_order_relaxed);
}

void Log(sb_log_level level, const std::string& message) noexcept {
  LogState& s = Logger();
  if (!LogEnabled(level)) return;
  // Called under the lock, so once sb_set_log_callback returns the old callback is never called.
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.callback != nullptr) s.callback(s.user_data, level, message.c_str());
}

sb_status ToBudget(const char* fn, const char* what, const sb_budget* in, Budget* out) noexcept {
  sb_budget b{};
  if (sb_status st = ReadIn(fn, what, in, sizeof(sb_budget), &b); st != SB_OK) return st;
  const int mode = EnumBits(b.mode);
  if (mode < 0 || mode > 3)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + "->mode is not an sb_budget_mode: " + std::to_string(mode));
  Budget r;
  r.mode = static_cast<BudgetMode>(mode);
  r.blocks = b.blocks;
  r.fraction = b.fraction;
  r.top_p = b.top_p;
  r.min_blocks = b.min_blocks;
  r.max_blocks = b.max_blocks;
  r.sink_blocks = b.sink_blocks;
  r.local_blocks = b.local_blocks;
  *out = r;
  return SB_OK;
}

sb_budget FromBudget(const Budget& r) noexcept {
  sb_budget b{};
  sb_budget_init(&b);
  b.mode = static_cast<sb_budget_mode>(static_cast<int>(r.mode));
  b.blocks = r.blocks;
  b.fraction = r.fraction;
  b.top_p = r.top_p;
  b.min_blocks = r.min_blocks;
  b.max_blocks = r.max_blocks;
  b.sink_blocks = r.sink_blocks;
  b.local_blocks = r.local_blocks;
  return b;
}

}  // namespace sparsebudget::capi

using namespace sparsebudget;  // NOLINT(google-build-using-namespace): this file is the boundary
using capi::Fail;
using capi::Guard;
using capi::Null;
using capi::Ok;

extern "C" {

const char* sb_status_string(sb_status status) {
  const int code = sparsebudget::capi::EnumBits(status);
  if (code < 0 || code > 7) return "unknown";
  return StatusCodeName(static_cast<StatusCode>(code));
}

const char* sb_last_error(void) { return capi::t_last_error.c_str(); }

const char* sb_version(void) { return Version(); }

sb_status sb_set_log_callback(sb_log_callback callback, void* user_data, sb_log_level min_level) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    const int level = sparsebudget::capi::EnumBits(min_level);
    if (level < SB_LOG_DEBUG || level > SB_LOG_ERROR)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "min_level is not an sb_log_level: " + std::to_string(level));
    capi::LogState& s = capi::Logger();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.callback = callback;
    s.user_data = user_data;
    s.min_level.store(callback != nullptr ? level : SB_LOG_ERROR + 1, std::memory_order_relaxed);
    return Ok();
  });
}

const char* sb_isa_name(sb_isa isa) {
  const int v = sparsebudget::capi::EnumBits(isa);
  if (v < 0 || v > 2) return "unknown";
  return IsaName(static_cast<Isa>(v));
}

sb_status sb_isa_parse(const char* name, sb_isa* isa) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (name == nullptr) return Null(fn, "name");
    if (isa == nullptr) return Null(fn, "isa");
    Expected<Isa> r = ParseIsa(name);
    if (!r.ok()) return Fail(fn, r.status());
    *isa = static_cast<sb_isa>(static_cast<int>(*r));
    return Ok();
  });
}

sb_isa sb_isa_detected(void) { return static_cast<sb_isa>(static_cast<int>(DetectedIsa())); }
sb_isa sb_isa_active(void) { return static_cast<sb_isa>(static_cast<int>(ActiveIsa())); }

int sb_isa_supported(sb_isa isa) {
  const int v = sparsebudget::capi::EnumBits(isa);
  if (v < 0 || v > 2) return 0;
  return IsaSupported(static_cast<Isa>(v)) ? 1 : 0;
}

sb_status sb_isa_set_max(sb_isa cap) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    const int v = sparsebudget::capi::EnumBits(cap);
    if (v < 0 || v > 2) return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "cap is not an sb_isa: " + std::to_string(v));
    SetMaxIsa(static_cast<Isa>(v));
    if (capi::LogEnabled(SB_LOG_INFO))
      capi::Log(SB_LOG_INFO, std::string("isa cap set to ") + IsaName(static_cast<Isa>(v)) + "; kernels now " +
                                 IsaName(ActiveIsa()) + " (detected " + IsaName(DetectedIsa()) + ")");
    return Ok();
  });
}

void sb_budget_init(sb_budget* budget) {
  if (budget == nullptr) return;
  std::memset(static_cast<void*>(budget), 0, sizeof(*budget));
  budget->struct_size = sizeof(sb_budget);
  budget->mode = SB_BUDGET_DENSE;
  budget->sink_blocks = 1;
  budget->local_blocks = 1;
  budget->fraction = 1.0;
  budget->top_p = 0.9;
}

sb_status sb_budget_validate(const sb_budget* budget) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    Budget b;
    if (sb_status st = capi::ToBudget(fn, "budget", budget, &b); st != SB_OK) return st;
    return capi::FromStatus(fn, ValidateBudget(b));
  });
}

sb_status sb_budget_resolve(const sb_budget* budget, int64_t causal_blocks, sb_resolved_budget* resolved) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    Budget b;
    if (sb_status st = capi::ToBudget(fn, "budget", budget, &b); st != SB_OK) return st;
    if (sb_status st = capi::CheckOut(fn, "resolved", resolved, sizeof(sb_resolved_budget)); st != SB_OK) return st;
    if (Status st = ValidateBudget(b); !st.ok()) return Fail(fn, st);
    if (causal_blocks < 1)
      return Fail(fn, SB_ERROR_INVALID_ARGUMENT, "causal_blocks must be >= 1, got " + std::to_string(causal_blocks));
    const ResolvedBudget r = ResolveBudget(b, causal_blocks);
    sb_resolved_budget out{};
    out.forced_blocks = r.forced_blocks;
    out.total_blocks = r.total_blocks;
    out.scored_blocks = r.scored_blocks;
    out.clamped = r.clamped ? 1 : 0;
    capi::WriteOut(resolved, out);
    return Ok();
  });
}

sb_status sb_budget_for_total(int64_t total_blocks, int64_t causal_blocks, int32_t sink_blocks, int32_t local_blocks,
                              sb_budget* budget) {
  const char* fn = __func__;
  return Guard(fn, [&]() -> sb_status {
    if (sb_status st = capi::CheckOut(fn, "budget", budget, sizeof(sb_budget)); st != SB_OK) return st;
    auto b = CheckedTotalBudget(total_blocks, causal_blocks, sink_blocks, local_blocks);
    if (!b.ok()) return Fail(fn, b.status());
    capi::WriteOut(budget, capi::FromBudget(*b));
    return Ok();
  });
}

}  // extern "C"
