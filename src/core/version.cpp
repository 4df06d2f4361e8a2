#include "sparsebudget/version.hpp"

namespace sparsebudget {
const char* Version() noexcept { return "0.1.0"; }
}  // namespace sparsebudget
