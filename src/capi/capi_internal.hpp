// Helpers shared by the C API translation units: error state, logging, struct-size checks and
// the exception guard. Nothing here is visible outside the library.
#pragma once

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "sparsebudget/attention.hpp"
#include "sparsebudget/budget.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/sparsebudget.h"
#include "sparsebudget/status.hpp"
#include "sparsebudget/thread_pool.hpp"

// The opaque handles of sparsebudget.h (C struct tags live in the global namespace).
struct sb_plan {
  sparsebudget::AttentionPlan plan;
};
struct sb_summaries {
  sparsebudget::BlockSummaries summaries;
};
struct sb_thread_pool {
  std::unique_ptr<sparsebudget::ThreadPool> pool;  // never null (sb_thread_pool_create)
};

namespace sparsebudget::capi {

// Clears this thread's last error; returns SB_OK.
sb_status Ok() noexcept;
// Records "fn: message" as this thread's last error, logs it at SB_LOG_ERROR, returns `code`.
// Never throws (falls back to a static message if formatting fails).
sb_status Fail(const char* fn, sb_status code, const std::string& message) noexcept;
sb_status Fail(const char* fn, const Status& status) noexcept;
inline sb_status FromStatus(const char* fn, const Status& status) noexcept {
  return status.ok() ? Ok() : Fail(fn, status);
}
inline sb_status Null(const char* fn, const char* what) noexcept {
  return Fail(fn, SB_ERROR_INVALID_ARGUMENT, std::string(what) + " is null");
}

bool LogEnabled(sb_log_level level) noexcept;
void Log(sb_log_level level, const std::string& message) noexcept;

// Runs f() (which returns sb_status); any exception becomes SB_ERROR_INTERNAL.
template <typename F>
sb_status Guard(const char* fn, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Fail(fn, SB_ERROR_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return Fail(fn, SB_ERROR_INTERNAL, std::string("unexpected exception: ") + e.what());
  } catch (...) {
    return Fail(fn, SB_ERROR_INTERNAL, "unexpected exception");
  }
}

// The bits of a C enum value as an int. A C caller may pass any int in an enum; loading an
// out-of-range value through the C++ enum type is undefined, so it is copied as raw bytes.
template <typename E>
int EnumBits(const E& e) noexcept {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Input struct: non-null, struct_size >= first version, bytes past what we know are zero. Copies
// the known part into *copy: min(struct_size, sizeof(T)) bytes, so fields a caller's older,
// smaller struct lacks keep the values *copy holds (callers pass a zeroed T: each later field's
// zero is its default).
template <typename T>
sb_status ReadIn(const char* fn, const char* what, const T* in, size_t first_version_size, T* copy) noexcept {
  if (in == nullptr) return Null(fn, what);
  const size_t size = in->struct_size;
  if (size < first_version_size)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + "->struct_size " + std::to_string(size) + " is smaller than the first version's " +
                    std::to_string(first_version_size) + " (set it to sizeof the struct)");
  if (size > SB_MAX_STRUCT_SIZE)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + "->struct_size " + std::to_string(size) + " is above SB_MAX_STRUCT_SIZE " +
                    std::to_string(SB_MAX_STRUCT_SIZE) + " (set it to sizeof the struct)");
  if (size > sizeof(T)) {
    const unsigned char* extra = reinterpret_cast<const unsigned char*>(in) + sizeof(T);
    for (size_t i = 0; i < size - sizeof(T); ++i)
      if (extra[i] != 0)
        return Fail(fn, SB_ERROR_UNSUPPORTED,
                    std::string(what) + "->struct_size " + std::to_string(size) + " is larger than this library's " +
                        std::to_string(sizeof(T)) + " and the extra fields are set");
  }
  std::memcpy(static_cast<void*>(copy), static_cast<const void*>(in), size < sizeof(T) ? size : sizeof(T));
  return SB_OK;
}

// A struct embedded by value in another (sb_attention_params::budget, sb_step_request::kv):
// its struct_size must keep it inside the enclosing struct's declared size, and one that is not
// the enclosing struct's last member cannot be larger than this library's sizeof, since a newer
// nested layout would move the siblings after it. Checked before ReadIn reads the nested bytes.
inline sb_status CheckNested(const char* fn, const char* what, size_t nested_size, size_t offset, size_t nested_sizeof,
                             size_t enclosing_size, size_t enclosing_sizeof) noexcept {
  // The caller read the enclosing struct with ReadIn (enclosing_size >= its first version, which
  // holds the nested struct), so enclosing_size - offset cannot wrap.
  if (enclosing_size < offset + nested_sizeof)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT, std::string(what) + " lies past the enclosing struct_size");
  const bool last_member = offset + nested_sizeof == enclosing_sizeof;
  if (nested_size > nested_sizeof && !last_member)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + ".struct_size " + std::to_string(nested_size) + " is not this library's " +
                    std::to_string(nested_sizeof) + " (the struct is embedded by value; set it to sizeof the struct)");
  if (nested_size > nested_sizeof && nested_size > enclosing_size - offset)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + ".struct_size " + std::to_string(nested_size) +
                    " reaches past the enclosing struct_size " + std::to_string(enclosing_size));
  return SB_OK;
}

// Output struct: non-null, struct_size >= first version.
template <typename T>
sb_status CheckOut(const char* fn, const char* what, const T* out, size_t first_version_size) noexcept {
  if (out == nullptr) return Null(fn, what);
  if (out->struct_size < first_version_size)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + "->struct_size " + std::to_string(out->struct_size) +
                    " is smaller than the first version's " + std::to_string(first_version_size) +
                    " (set it to sizeof the struct)");
  if (out->struct_size > SB_MAX_STRUCT_SIZE)
    return Fail(fn, SB_ERROR_INVALID_ARGUMENT,
                std::string(what) + "->struct_size " + std::to_string(out->struct_size) +
                    " is above SB_MAX_STRUCT_SIZE " + std::to_string(SB_MAX_STRUCT_SIZE) +
                    " (set it to sizeof the struct)");
  return SB_OK;
}

// Copies `value` into *out up to out->struct_size bytes, keeping out->struct_size.
template <typename T>
void WriteOut(T* out, T value) noexcept {
  const size_t size = out->struct_size < sizeof(T) ? out->struct_size : sizeof(T);
  value.struct_size = out->struct_size;
  std::memcpy(static_cast<void*>(out), static_cast<const void*>(&value), size);
}

// sb_budget <-> Budget. ToBudget checks struct_size and the mode enum (ValidateBudget does the
// rest where the caller needs it); `what` names the struct in messages.
sb_status ToBudget(const char* fn, const char* what, const sb_budget* in, Budget* out) noexcept;
sb_budget FromBudget(const Budget& budget) noexcept;
// sb_kv_view -> KVCacheView: struct_size and the dtype enum (the C++ calls check the rest);
// `what` names the view in messages.
sb_status ToKvView(const char* fn, const char* what, const sb_kv_view* in, KVCacheView* out);

// The C++ predictor behind a handle (capi_predictor.cpp); `p` must not be null.
const Predictor* PredictorOf(const sb_predictor* p) noexcept;

}  // namespace sparsebudget::capi
