#include "layers/activation.h"

#include "core/ops.h"

namespace minnow {

// y = max(x, 0); dx = dy * [x > 0]. The node is core's ReluBackward.
Tensor ReLU::forward(const Tensor& x) { return relu(x); }

}  // namespace minnow
