// Dataset helpers (subset, even per-class cut, validation split, label
// remapping) and the DataLoader: coverage of each epoch, batching, drop_last,
// normalisation, augmentation, determinism for a seed and epoch with or
// without the background thread, and clean stops mid-epoch.
#include <algorithm>
#include <cstring>
#include <set>

#include "data/loader.h"
#include "test_data_helpers.h"

using namespace minnow;
using namespace minnow::testing;

namespace {
std::shared_ptr<const ImageSet> shared(ImageSet s) { return std::make_shared<const ImageSet>(std::move(s)); }

std::vector<Batch> whole_epoch(DataLoader& loader, int64_t epoch) {
    loader.start_epoch(epoch);
    std::vector<Batch> out;
    Batch b;
    while (loader.next(b)) out.push_back(b);
    return out;
}

bool same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (a[i].indices != b[i].indices || a[i].images.to_vector() != b[i].images.to_vector() ||
            a[i].labels.to_vector() != b[i].labels.to_vector())
            return false;
    return true;
}
}  // namespace

// ---------------------------------------------------------------- dataset helpers
TEST_CASE("data: subset, evenly_across_classes and split_validation") {
    const ImageSet s = synthetic_set(100, 3, 4, 4, 10);
    const ImageSet sub = subset(s, {5, 2, 5});
    CHECK(sub.n == 3);
    CHECK(sub.labels == std::vector<int>{5, 2, 5});
    CHECK(std::equal(sub.image(0), sub.image(1), s.image(5)));
    CHECK(std::equal(sub.image(1), sub.image(2), s.image(2)));
    CHECK_THROWS_AS(subset(s, {100}), Error);

    const ImageSet even = evenly_across_classes(s, 23);  // 3 of classes 0-2, 2 of the rest
    CHECK(even.n == 23);
    CHECK(class_counts(even) == std::vector<int64_t>{3, 3, 3, 2, 2, 2, 2, 2, 2, 2});
    CHECK(same_set(evenly_across_classes(s, 20), subset(s, [] {
                       std::vector<int64_t> v(20);
                       for (int i = 0; i < 20; ++i) v[i] = i;  // labels cycle, so the first 20
                       return v;
                   }())));
    check_error([&] { evenly_across_classes(s, 101); }, {"evenly_across_classes", "101"});
    check_error([&] { evenly_across_classes(subset(s, {0, 1, 2, 4}), 4); }, {"class 3", "has 0 images"});

    const auto [train, val] = split_validation(s, 30, 7);
    CHECK(train.n == 70);
    CHECK(val.n == 30);
    // Disjoint and together the whole set: each image's bytes appear once.
    std::multiset<std::vector<uint8_t>> all, parts;
    for (int64_t i = 0; i < s.n; ++i) all.insert(std::vector<uint8_t>(s.image(i), s.image(i) + s.image_size()));
    for (const ImageSet* p : {&train, &val})
        for (int64_t i = 0; i < p->n; ++i)
            parts.insert(std::vector<uint8_t>(p->image(i), p->image(i) + p->image_size()));
    CHECK(all == parts);
    CHECK(same_set(split_validation(s, 30, 7).second, val));
    CHECK(!same_set(split_validation(s, 30, 8).second, val));
    CHECK_THROWS_AS(split_validation(s, 101, 0), Error);
}

TEST_CASE("data: remap_labels swaps classes, names follow the images") {
    ImageSet s = synthetic_set(20, 1, 2, 2, 10);
    const std::vector<int> before = s.labels;
    remap_labels(s, {1, 0, 2, 3, 4, 5, 6, 7, 8, 9});
    for (size_t i = 0; i < before.size(); ++i) CHECK(s.labels[i] == (before[i] < 2 ? 1 - before[i] : before[i]));
    CHECK(s.class_names[0] == "class1");
    CHECK(s.class_names[1] == "class0");
    ImageSet m = synthetic_set(4, 1, 2, 2, 3);
    remap_labels(m, {0, 0, 1});  // merging
    CHECK(m.labels == std::vector<int>{0, 0, 1, 0});
    CHECK(m.class_names == std::vector<std::string>{"class0+class1", "class2", ""});
    check_error([&] { remap_labels(m, {0, 1}); }, {"remap_labels", "2 entries for 3 classes"});
    check_error([&] { remap_labels(m, {0, 1, 3}); }, {"remap_labels", "class 2 maps to 3"});
}

// ---------------------------------------------------------------- loader
TEST_CASE("data: loader covers the set once per epoch with the right batches") {
    const auto s = shared(synthetic_set(10, 2, 3, 3, 4));
    LoaderOptions o;
    o.batch_size = 4;
    o.shuffle = false;
    for (int prefetch : {0, 2}) {
        o.prefetch = prefetch;
        o.drop_last = false;
        DataLoader loader(s, o);
        CHECK(loader.num_batches() == 3);
        const auto batches = whole_epoch(loader, 0);
        REQUIRE(batches.size() == 3);
        CHECK(batches[0].images.shape() == Shape{4, 2, 3, 3});
        CHECK(batches[2].images.shape() == Shape{2, 2, 3, 3});
        CHECK(batches[2].labels.shape() == Shape{2});
        CHECK(batches[1].indices == std::vector<int64_t>{4, 5, 6, 7});
        CHECK(batches[1].labels.to_vector() == std::vector<float>{0, 1, 2, 3});
        // Unshuffled, unaugmented, unnormalised: bytes / 255.
        const auto v = batches[1].images.to_vector();
        for (size_t j = 0; j < v.size(); ++j) REQUIRE(v[j] == s->pixels[4 * 18 + j] / 255.f);

        o.drop_last = true;
        DataLoader dropping(s, o);
        CHECK(dropping.num_batches() == 2);
        CHECK(whole_epoch(dropping, 0).size() == 2);
    }

    // Shuffled: every epoch is a permutation, and epochs differ.
    o.shuffle = true;
    o.drop_last = false;
    DataLoader loader(s, o);
    std::vector<int64_t> seen[2];
    for (int e = 0; e < 2; ++e)
        for (const auto& b : whole_epoch(loader, e)) seen[e].insert(seen[e].end(), b.indices.begin(), b.indices.end());
    CHECK(seen[0] != seen[1]);
    for (auto& v : seen) {
        std::sort(v.begin(), v.end());
        CHECK(v == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    }
}

TEST_CASE("data: loader normalises each channel") {
    ImageSet s = synthetic_set(1, 3, 1, 2, 1);
    s.pixels = {0, 255, 51, 102, 255, 0};
    LoaderOptions o;
    o.shuffle = false;
    o.mean = {0.5f, 0.2f, 0.f};
    o.std = {0.5f, 0.1f, 2.f};
    DataLoader loader(shared(s), o);
    const auto b = whole_epoch(loader, 0);
    const std::vector<float> want{-1.f, 1.f, 0.f, 2.f, 0.5f, 0.f};
    check_close(b[0].images, Tensor::from_vector(want, {1, 3, 1, 2}), 1e-6, 1e-6, "normalised");
}

TEST_CASE("data: augmentation is a padded shift and maybe a mirror of the image") {
    // One 1x6x6 image with distinct pixel values 1..36, seen 400 times.
    ImageSet one = synthetic_set(1, 1, 6, 6, 1);
    for (int i = 0; i < 36; ++i) one.pixels[i] = static_cast<uint8_t>(i + 1);
    const auto s = shared(subset(one, std::vector<int64_t>(400, 0)));
    LoaderOptions o;
    o.batch_size = 64;
    o.augment = true;
    o.crop_padding = 2;
    o.seed = 11;
    DataLoader loader(s, o);
    std::set<std::pair<int, int>> offsets;
    int flips = 0;
    for (const auto& b : whole_epoch(loader, 0))
        for (int64_t k = 0; k < b.images.size(0); ++k) {
            const float* img = b.images.data() + k * 36;
            // Find the (dy, dx, flip) this output is, by trying them all.
            int matches = 0;
            for (int flip = 0; flip < 2; ++flip)
                for (int dy = -2; dy <= 2; ++dy)
                    for (int dx = -2; dx <= 2; ++dx) {
                        bool ok = true;
                        for (int y = 0; y < 6 && ok; ++y)
                            for (int x = 0; x < 6 && ok; ++x) {
                                const int sy = y + dy, sx = (flip ? 5 - x : x) + dx;
                                const float want =
                                    (sy < 0 || sy >= 6 || sx < 0 || sx >= 6) ? 0.f : one.pixels[sy * 6 + sx] / 255.f;
                                ok = img[y * 6 + x] == want;
                            }
                        if (ok) {
                            ++matches;
                            offsets.insert({dy, dx});
                            flips += flip;
                        }
                    }
            REQUIRE(matches == 1);
        }
    CHECK(offsets.size() == 25);  // every offset in [-2, 2]^2 occurs
    CHECK(flips > 150);
    CHECK(flips < 250);
}

TEST_CASE("data: cutout zeroes one clipped square after normalisation") {
    ImageSet s = synthetic_set(200, 2, 8, 8, 2);
    for (auto& p : s.pixels) p = 200;
    LoaderOptions o;
    o.augment = true;
    o.crop_padding = 0;
    o.flip = false;
    o.cutout = 4;
    o.mean = {0.1f, 0.1f};
    o.std = {0.5f, 0.5f};
    DataLoader loader(shared(s), o);
    int clipped = 0;
    for (const auto& b : whole_epoch(loader, 3))
        for (int64_t k = 0; k < b.images.size(0); ++k) {
            int zeros = 0, ymin = 8, ymax = -1, xmin = 8, xmax = -1;
            for (int y = 0; y < 8; ++y)
                for (int x = 0; x < 8; ++x) {
                    const float v0 = b.images.data()[k * 128 + y * 8 + x],
                                v1 = b.images.data()[k * 128 + 64 + y * 8 + x];
                    REQUIRE(v0 == v1);  // the same square in every channel
                    if (v0 == 0.f) {
                        ++zeros;
                        ymin = std::min(ymin, y), ymax = std::max(ymax, y);
                        xmin = std::min(xmin, x), xmax = std::max(xmax, x);
                    } else {
                        REQUIRE(v0 == doctest::Approx((200 / 255.f - 0.1f) / 0.5f));
                    }
                }
            REQUIRE(zeros > 0);
            CHECK(zeros == (ymax - ymin + 1) * (xmax - xmin + 1));  // a rectangle
            CHECK(ymax - ymin + 1 <= 4);
            CHECK(xmax - xmin + 1 <= 4);
            clipped += zeros < 16;
        }
    CHECK(clipped > 0);
    CHECK(clipped < 200);
}

TEST_CASE("data: loader is deterministic in (seed, epoch), with or without prefetch") {
    const auto s = shared(synthetic_set(50, 3, 8, 8, 5));
    LoaderOptions o;
    o.batch_size = 8;
    o.augment = true;
    o.cutout = 3;
    o.mean = {0.5f, 0.5f, 0.5f};
    o.std = {0.25f, 0.25f, 0.25f};
    o.seed = 42;
    o.prefetch = 0;
    DataLoader sync(s, o);
    o.prefetch = 3;
    DataLoader async(s, o), resumed(s, o);
    const auto e0 = whole_epoch(sync, 0), e1 = whole_epoch(sync, 1), e2 = whole_epoch(sync, 2);
    CHECK(same_batches(e0, whole_epoch(async, 0)));
    CHECK(same_batches(e2, whole_epoch(async, 2)));
    CHECK(same_batches(e2, whole_epoch(resumed, 2)));  // no epochs before it
    CHECK(same_batches(e1, whole_epoch(resumed, 1)));
    CHECK(!same_batches(e0, e1));
    o.seed = 43;
    DataLoader other(s, o);
    CHECK(!same_batches(e0, whole_epoch(other, 0)));
    CHECK(DataLoader::derive_seed(42, 1, 0) != DataLoader::derive_seed(42, 0, 1));
}

TEST_CASE("data: loader stops cleanly mid-epoch") {
    const auto s = shared(synthetic_set(300, 3, 8, 8, 3));
    LoaderOptions o;
    o.batch_size = 10;
    o.augment = true;
    o.prefetch = 2;
    Batch b;
    {
        DataLoader loader(s, o);
        loader.start_epoch(0);
        REQUIRE(loader.next(b));
    }  // destroyed with the producer blocked on a full queue
    {
        DataLoader loader(s, o);
        loader.start_epoch(0);
    }  // destroyed before anything was taken
    DataLoader loader(s, o);
    for (int e = 0; e < 20; ++e) {  // restarted at every point of an epoch
        loader.start_epoch(e);
        for (int k = 0; k < e; ++k) REQUIRE(loader.next(b));
    }
    // A restarted epoch still gives the full, same epoch.
    loader.start_epoch(5);
    REQUIRE(loader.next(b));
    DataLoader fresh(s, o);
    CHECK(same_batches(whole_epoch(loader, 7), whole_epoch(fresh, 7)));
    // After the end, next() keeps saying false.
    CHECK(!loader.next(b));
    CHECK(!loader.next(b));
}

TEST_CASE("data: loader option errors") {
    const auto s = shared(synthetic_set(4, 3, 2, 2, 2));
    LoaderOptions o;
    Batch b;
    DataLoader fine(s, o);
    check_error([&] { fine.next(b); }, {"start_epoch first"});
    check_error([&] { fine.start_epoch(-1); }, {"epoch must be >= 0"});
    check_error([&] { DataLoader(nullptr, o); }, {"no image set"});
    check_error([&] { DataLoader(shared(ImageSet{0, 3, 2, 2, {}, {}, {"a"}}), o); }, {"empty"});
    o.batch_size = 0;
    check_error([&] { DataLoader(s, o); }, {"batch_size"});
    o.batch_size = 2;
    o.mean = {0.5f};
    o.std = {0.5f};
    check_error([&] { DataLoader(s, o); }, {"one value per channel (3)"});
    o.mean = {0.5f, 0.5f, 0.5f};
    o.std = {0.5f, 0.f, 0.5f};
    check_error([&] { DataLoader(s, o); }, {"std must be positive"});
    o.std = {0.5f, 0.5f, 0.5f};
    o.cutout = -1;
    check_error([&] { DataLoader(s, o); }, {"cutout"});
}

TEST_CASE("data: the ranks' slices of every batch, in rank order, are the one-process batch bit for bit") {
    const auto s = shared(synthetic_set(47, 3, 8, 8, 5));  // 5 batches of 10, the last of 7
    LoaderOptions o;
    o.batch_size = 10;
    o.augment = true;
    o.cutout = 3;
    o.mean = {0.5f, 0.5f, 0.5f};
    o.std = {0.25f, 0.25f, 0.25f};
    o.seed = 9;
    DataLoader one(s, o);
    const std::vector<Batch> whole = whole_epoch(one, 3);
    for (int ranks : {1, 2, 3, 4}) {
        CAPTURE(ranks);
        std::vector<std::vector<Batch>> parts;
        for (int r = 0; r < ranks; ++r) {
            LoaderOptions ro = o;
            ro.rank = r;
            ro.ranks = ranks;
            ro.prefetch = r % 2 ? 0 : 2;  // with and without the background thread
            DataLoader part(s, ro);
            parts.push_back(whole_epoch(part, 3));
            REQUIRE(parts.back().size() == whole.size());
        }
        for (size_t b = 0; b < whole.size(); ++b) {
            const Batch& w = whole[b];
            const int64_t per = w.images.numel() / w.images.size(0);
            int64_t k = 0;
            for (int r = 0; r < ranks; ++r) {
                const Batch& p = parts[r][b];
                CHECK(p.global_count == w.images.size(0));
                CHECK(p.global_start == k);
                const int64_t n = p.images.size(0);
                CHECK(std::memcmp(p.images.data(), w.images.data() + k * per, sizeof(float) * n * per) == 0);
                CHECK(std::memcmp(p.labels.data(), w.labels.data() + k, sizeof(float) * n) == 0);
                CHECK(std::equal(p.indices.begin(), p.indices.end(), w.indices.begin() + k));
                k += n;
            }
            CHECK(k == w.images.size(0));  // every image in exactly one slice
        }
    }
    LoaderOptions bad = o;
    bad.rank = 2;
    bad.ranks = 2;
    CHECK_THROWS_WITH_AS(DataLoader(s, bad), doctest::Contains("rank must be in [0, ranks)"), Error);
}
