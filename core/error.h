// minnow/core/error.h: the one exception type for a user's mistake.
// A header of its own so that code below the tensor (kernels/) can throw it.
#pragma once

#include <stdexcept>

namespace minnow {

// Any error about what a user passed in: shapes, dims, values.
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace minnow
