/// @file
/// sparsebudget/sparsebudget.hpp - umbrella header of the C++ API.
#pragma once

#include "sparsebudget/attention.hpp"
#include "sparsebudget/budget.hpp"
#include "sparsebudget/isa.hpp"
#include "sparsebudget/status.hpp"
#include "sparsebudget/thread_pool.hpp"
#include "sparsebudget/version.hpp"
