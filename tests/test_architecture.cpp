// docs/architecture.md says which part of minnow may include which; this
// test reads that table and checks every #include "..." of every source file
// of every part against it.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_helpers.h"

namespace fs = std::filesystem;
using minnow::testing::source_path;

namespace {

// part ("core/") -> what it may include: folders ("core/") or single headers ("core/error.h").
std::map<std::string, std::vector<std::string>> architecture_table() {
    std::ifstream in(source_path("docs/architecture.md"));
    REQUIRE_MESSAGE(in, "docs/architecture.md is missing");
    std::map<std::string, std::vector<std::string>> table;
    std::string line;
    bool in_table = false;
    while (std::getline(in, line)) {
        if (line.find("<!-- architecture table") != std::string::npos) in_table = true;
        if (!in_table || line.rfind("| `", 0) != 0) continue;
        // | `part/` | what | `a/` `b/c.h` |
        const size_t last_bar = line.rfind('|', line.size() - 2);
        const std::string part = line.substr(3, line.find('`', 3) - 3);
        std::vector<std::string> allowed;
        std::istringstream cells(line.substr(last_bar));
        std::string word;
        while (cells >> word)
            if (word.size() > 2 && word.front() == '`' && word.back() == '`') allowed.push_back(word.substr(1, word.size() - 2));
        table[part] = allowed;
    }
    return table;
}

bool allowed_by(const std::string& include, const std::vector<std::string>& allowed) {
    for (const std::string& a : allowed)
        if (a.back() == '/' ? include.rfind(a, 0) == 0 : include == a) return true;
    return false;
}

}  // namespace

TEST_CASE("architecture: every include obeys docs/architecture.md") {
    const auto table = architecture_table();
    REQUIRE(table.size() >= 8);
    // Every folder that holds a project include is a part of the table.
    std::vector<std::string> parts;
    for (const auto& [part, allowed] : table) parts.push_back(part);
    int checked = 0;
    for (const auto& [part, allowed] : table) {
        CAPTURE(part);
        REQUIRE_MESSAGE(fs::is_directory(source_path(part)), "docs/architecture.md names " << part << ", not a folder");
        for (auto it = fs::recursive_directory_iterator(source_path(part)); it != fs::recursive_directory_iterator();
             ++it) {
            const fs::directory_entry& entry = *it;
            if (entry.is_directory() && entry.path().filename() == "node_modules") {  // web/'s npm packages
                it.disable_recursion_pending();
                continue;
            }
            const std::string ext = entry.path().extension().string();
            if (ext != ".h" && ext != ".cpp") continue;
            std::ifstream in(entry.path());
            std::string line;
            while (std::getline(in, line)) {
                if (line.rfind("#include \"", 0) != 0) continue;
                const std::string include = line.substr(10, line.find('"', 10) - 10);
                if (include.find('/') == std::string::npos) continue;  // a file beside it
                bool project = false;
                for (const std::string& p : parts) project |= include.rfind(p, 0) == 0;
                if (!project) continue;  // another library's header
                ++checked;
                CHECK_MESSAGE(allowed_by(include, allowed), entry.path().lexically_relative(source_path(""))
                                                                << " includes \"" << include << "\", which " << part
                                                                << " may not use (docs/architecture.md)");
            }
        }
    }
    CHECK(checked > 100);
}
