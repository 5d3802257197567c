#include "layers/flatten.h"

namespace minnow {

Tensor Flatten::forward(const Tensor& x) {
    if (x.dim() == 0) throw Error("Flatten: cannot flatten a 0-d tensor");
    return x.flatten(start_dim, end_dim);
}

std::string Flatten::extra_repr() const {
    return "start_dim=" + std::to_string(start_dim) + ", end_dim=" + std::to_string(end_dim);
}

}  // namespace minnow
