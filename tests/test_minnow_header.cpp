// minnow.h includes every public header of the library, so a program that
// includes it has all of minnow: a new header that is not in minnow.h fails
// here, naming it.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "minnow.h"  // and it compiles, on its own
#include "test_helpers.h"

namespace fs = std::filesystem;

namespace {

std::string first_line(const fs::path& file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    return line;
}

// The "PATH" of every `#include "PATH"` line of `file`.
std::set<std::string> quoted_includes(const fs::path& file) {
    std::ifstream in(file);
    REQUIRE_MESSAGE(in.good(), "cannot open " << file.string());
    std::set<std::string> out;
    const std::string directive = "#include \"";
    for (std::string line; std::getline(in, line);)
        if (line.rfind(directive, 0) == 0) out.insert(line.substr(directive.size(), line.find('"', directive.size()) - directive.size()));
    return out;
}

}  // namespace

TEST_CASE("minnow.h includes every public header") {
    const fs::path root = minnow::testing::source_path("");
    const std::set<std::string> included = quoted_includes(root / "minnow.h");
    // The library's folders (docs/architecture.md).
    int headers = 0;
    for (const char* dir : {"core", "kernels", "dist", "layers", "optim", "data", "train"}) {
        if (!fs::is_directory(root / dir)) continue;
        for (const auto& entry : fs::recursive_directory_iterator(root / dir)) {
            if (entry.path().extension() != ".h") continue;
            const std::string rel = fs::relative(entry.path(), root).generic_string();
            ++headers;
            // A header that says so on its first line is the library's own business.
            if (first_line(entry.path()).find("(internal)") != std::string::npos) continue;
            CHECK_MESSAGE(included.count(rel), "minnow.h does not include \"" << rel << "\"");
        }
    }
    CHECK(headers > 30);
    // and nothing it includes has gone
    for (const std::string& rel : included) CHECK_MESSAGE(fs::exists(root / rel), "minnow.h includes the missing \"" << rel << "\"");
}
