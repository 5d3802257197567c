#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"

namespace minnow {

// ---------------------------------------------------------------- shapes
std::string shape_str(const Shape& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

int64_t shape_numel(const Shape& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::vector<int64_t> contiguous_strides(const Shape& shape) {
    std::vector<int64_t> st(shape.size());
    int64_t s = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        st[i] = s;
        s *= shape[i];
    }
    return st;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
    const size_t n = std::max(a.size(), b.size());
    Shape out(n);
    for (size_t i = 0; i < n; ++i) {
        const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
        const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
        if (da != db && da != 1 && db != 1)
            throw Error(std::string(op) + ": shapes " + shape_str(a) + " and " + shape_str(b) +
                        " cannot be broadcast together");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op) {
    const int64_t d = dim < 0 ? dim + ndim : dim;
    if (d < 0 || d >= std::max<int64_t>(ndim, 1))
        throw Error(std::string(op) + ": dim " + std::to_string(dim) + " is out of range for a " +
                    std::to_string(ndim) + "-d tensor");
    return d;
}

// ---------------------------------------------------------------- storage
// A training step allocates the same sizes in the same order every time.
// Returning freed blocks to the system and asking again would page-fault
// every page of every activation on every step, so freed blocks are kept in
// per-size free lists and handed out again (exact size match, so nothing is
// wasted on rounding). The cache is bounded; past the bound blocks are freed.
namespace {
class BlockCache {
public:
    void* get(size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = free_.find(bytes);
            if (it != free_.end() && !it->second.empty()) {
                void* p = it->second.back();
                it->second.pop_back();
                cached_ -= bytes;
                return p;
            }
        }
        void* p = std::aligned_alloc(64, bytes);
        if (!p) {
            release_all();  // a last try with the cache emptied
            p = std::aligned_alloc(64, bytes);
            if (!p) throw std::bad_alloc();
        }
        return p;
    }
    void put(void* p, size_t bytes) {
        if (bytes >= kMinCached) {
            std::lock_guard<std::mutex> lock(mu_);
            if (cached_ + bytes <= kMaxCached) {
                free_[bytes].push_back(p);
                cached_ += bytes;
                return;
            }
        }
        std::free(p);
    }
    void release_all() {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& [bytes, blocks] : free_)
            for (void* p : blocks) std::free(p);
        free_.clear();
        cached_ = 0;
    }
    ~BlockCache() { release_all(); }

private:
    static constexpr size_t kMinCached = 64 * 1024;            // small blocks: malloc is fast enough
    static constexpr size_t kMaxCached = size_t{4} << 30;      // 4 GiB
    std::mutex mu_;
    std::unordered_map<size_t, std::vector<void*>> free_;
    size_t cached_ = 0;
};

BlockCache& block_cache() {
    static BlockCache* cache = new BlockCache;  // never destroyed: tensors may outlive static destruction
    return *cache;
}

size_t storage_bytes(int64_t n) {
    // aligned_alloc wants a size that is a multiple of the alignment.
    return ((static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64) * 64;
}
}  // namespace

Storage::Storage(int64_t n) : numel(n) {
    if (n < 0) throw Error("Storage: negative size " + std::to_string(n));
    data = static_cast<float*>(block_cache().get(storage_bytes(n)));
}

Storage::~Storage() { block_cache().put(data, storage_bytes(numel)); }

void release_cached_memory() { block_cache().release_all(); }

// ---------------------------------------------------------------- creation
static Tensor make_tensor(const Shape& shape) {
    for (int64_t d : shape)
        if (d < 0) throw Error("cannot make a tensor of shape " + shape_str(shape));
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = shape;
    impl->storage = std::make_shared<Storage>(shape_numel(shape));
    return Tensor(impl);
}

Tensor Tensor::empty(const Shape& shape) { return make_tensor(shape); }

Tensor Tensor::full(const Shape& shape, float value) {
    Tensor t = make_tensor(shape);
    fill_(t, value);
    return t;
}
Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.f); }
Tensor Tensor::ones(const Shape& shape) { return full(shape, 1.f); }
Tensor Tensor::scalar(float value) { return full({}, value); }

Tensor Tensor::arange(int64_t n) {
    Tensor t = make_tensor({n});
    for (int64_t i = 0; i < n; ++i) t.data()[i] = static_cast<float>(i);
    return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
    if (static_cast<int64_t>(values.size()) != shape_numel(shape))
        throw Error("from_vector: " + std::to_string(values.size()) + " values for shape " +
                    shape_str(shape));
    Tensor t = make_tensor(shape);
    std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
    return t;
}

Tensor Tensor::uniform(const Shape& shape, float low, float high, Generator* gen) {
    Generator& g = gen ? *gen : default_generator();
    Tensor t = make_tensor(shape);
    float* p = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = low + (high - low) * g.uniform();
    return t;
}

Tensor Tensor::normal(const Shape& shape, float mean, float std, Generator* gen) {
    Generator& g = gen ? *gen : default_generator();
    Tensor t = make_tensor(shape);
    float* p = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = mean + std * g.normal();
    return t;
}

// ---------------------------------------------------------------- access
int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "size")]; }

float Tensor::item() const {
    if (numel() != 1)
        throw Error("item(): tensor of shape " + shape_str(shape()) + " has " +
                    std::to_string(numel()) + " elements, not one");
    return data()[0];
}

std::vector<float> Tensor::to_vector() const { return std::vector<float>(data(), data() + numel()); }

float Tensor::at(std::initializer_list<int64_t> index) const {
    if (static_cast<int64_t>(index.size()) != dim())
        throw Error("at(): " + std::to_string(index.size()) + " indices for shape " + shape_str(shape()));
    const auto st = contiguous_strides(shape());
    int64_t off = 0, i = 0;
    for (int64_t ix : index) {
        if (ix < 0 || ix >= shape()[i])
            throw Error("at(): index " + std::to_string(ix) + " out of range for dim " +
                        std::to_string(i) + " of shape " + shape_str(shape()));
        off += ix * st[i++];
    }
    return data()[off];
}

// ---------------------------------------------------------------- views
// Reshape: the gradient of a view is the gradient reshaped back.
struct ReshapeBackward : Node {
    Shape input_shape;
    std::vector<Tensor> backward(const Tensor& dy) override { return {dy.reshape(input_shape)}; }
    const char* name() const override { return "ReshapeBackward"; }
};

Tensor Tensor::reshape(const Shape& new_shape) const {
    Shape s = new_shape;
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == -1) {
            if (infer >= 0) throw Error("reshape: more than one -1 in " + shape_str(new_shape));
            infer = static_cast<int64_t>(i);
        } else {
            known *= s[i];
        }
    }
    if (infer >= 0 && known > 0 && numel() % known == 0) s[infer] = numel() / known;
    if (shape_numel(s) != numel())
        throw Error("reshape: cannot view a tensor of shape " + shape_str(shape()) + " as " +
                    shape_str(new_shape));
    auto out = std::make_shared<TensorImpl>();
    out->shape = s;
    out->storage = impl().storage;
    out->offset = impl().offset;
    auto node = std::make_shared<ReshapeBackward>();
    node->input_shape = shape();
    return attach(Tensor(out), node, {*this});
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
    if (dim() == 0) return reshape({1});
    start = normalize_dim(start, dim(), "flatten");
    end = normalize_dim(end, dim(), "flatten");
    Shape s(shape().begin(), shape().begin() + start);
    int64_t m = 1;
    for (int64_t i = start; i <= end; ++i) m *= shape()[i];
    s.push_back(m);
    s.insert(s.end(), shape().begin() + end + 1, shape().end());
    return reshape(s);
}

struct CloneBackward : Node {
    std::vector<Tensor> backward(const Tensor& dy) override { return {dy}; }
    const char* name() const override { return "CloneBackward"; }
};

Tensor Tensor::clone() const {
    Tensor out = make_tensor(shape());
    std::memcpy(out.data(), data(), numel() * sizeof(float));
    return attach(out, std::make_shared<CloneBackward>(), {*this});
}

// ---------------------------------------------------------------- printing
std::string to_string(const Tensor& t) {
    if (!t.defined()) return "Tensor(undefined)";
    std::ostringstream os;
    os << "Tensor(shape=" << shape_str(t.shape());
    if (t.numel() <= 64) {
        os << ", values=[";
        for (int64_t i = 0; i < t.numel(); ++i) os << (i ? ", " : "") << t.data()[i];
        os << "]";
    }
    if (t.requires_grad()) os << ", requires_grad";
    os << ")";
    return os.str();
}

}  // namespace minnow
