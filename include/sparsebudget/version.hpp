/// @file
/// sparsebudget/version.hpp - library version.
#pragma once

namespace sparsebudget {
/// @name Version of these headers, MAJOR.MINOR.PATCH (0.1.0)
/// Compile-time constants; Version() reports the library actually linked. SB_VERSION_* in
/// sparsebudget.h carry the same numbers.
///@{
inline constexpr int kVersionMajor = 0;  ///< MAJOR
inline constexpr int kVersionMinor = 1;  ///< MINOR
inline constexpr int kVersionPatch = 0;  ///< PATCH
///@}
/// The linked library's version, "0.1.0" (static storage).
const char* Version() noexcept;
}  // namespace sparsebudget
