/// @file
/// sparsebudget/status.hpp - status codes and an expected-value type.
///
/// Every fallible call in the library returns a Status (or an Expected<T>), never throws on bad
/// input, and names the bad value in the message. A default-constructed Status is OK and holds no
/// heap memory; a message is only allocated on the error path.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace sparsebudget {

/// Numeric values are part of the C ABI (sb_status in sparsebudget.h mirrors them).
enum class StatusCode : int {
  kOk = 0,               ///< success
  kInvalidArgument = 1,  ///< a parameter is malformed: null pointer, zero/negative size, bad enum
  kOutOfRange = 2,       ///< a value is well-formed but outside what the call accepts
  kNotFound = 3,         ///< a named thing (file, predictor type, task name) does not exist
  kParseError = 4,       ///< a file or text could not be parsed (JSON, JSONL, .npy, safetensors)
  kIoError = 5,          ///< reading or writing a file failed
  kUnsupported = 6,      ///< valid request this build or CPU cannot serve (e.g. ISA not present)
  kInternal = 7,         ///< a broken invariant inside the library: a bug, please report it
};

/// Stable lowercase name of a code ("ok", "invalid_argument", ...).
const char* StatusCodeName(StatusCode code) noexcept;

/// Outcome of a fallible call: a StatusCode and, on error, a message naming the bad value.
/// A plain value; must not be ignored ([[nodiscard]]).
class [[nodiscard]] Status {
 public:
  /// OK, no message, no allocation.
  Status() noexcept = default;
  /// A status with `code` and `message`; with StatusCode::kOk it is OK whatever the message.
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  /// True if code() is StatusCode::kOk.
  bool ok() const noexcept { return code_ == StatusCode::kOk; }
  /// The code; kOk on success.
  StatusCode code() const noexcept { return code_; }
  /// What went wrong, naming the bad value (without the code name); empty for Status().
  const std::string& message() const noexcept { return message_; }
  /// "invalid_argument: head_dim must be >= 1, got 0"
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

/// Same as Status(): OK, allocates nothing.
inline Status OkStatus() noexcept { return Status(); }

/// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Expected {
 public:
  /// Holds `value` (implicit, so a function can `return value;`).
  Expected(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  /// Holds an error (implicit, so a function can `return status;`). An OK `status` is a caller
  /// bug and is stored as StatusCode::kInternal, so ok() stays false.
  Expected(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (status_.ok()) status_ = Status(StatusCode::kInternal, "Expected built from an OK status");
  }
  /// True if a value is held.
  bool ok() const noexcept { return value_.has_value(); }
  /// The error; an OK Status when a value is held.
  const Status& status() const noexcept { return status_; }
  /// @name Access to the held value
  ///@{

  /// The held value. Undefined behaviour unless ok(): check first. Never throws.
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  ///@}

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace sparsebudget
