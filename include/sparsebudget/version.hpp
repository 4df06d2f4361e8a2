/// @file
/// sparsebudget/version.hpp - library version.
#pragma once

namespace sparsebudget {
inline constexpr int kVersionMajor = 0;
inline constexpr int kVersionMinor = 1;
inline constexpr int kVersionPatch = 0;
/// "0.1.0"
const char* Version() noexcept;
}  ///< namespace sparsebudget
