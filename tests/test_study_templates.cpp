// The studies' summary templates (studies/templates/<study>/<part>.md) and
// their filler (studies/summary.h): the filler's errors, and that every
// template is used by its study, which gives a value under each of its
// placeholder names. (At run time the filler also fails on a missing or an
// unused value, so tests/studies_test.sh checks the parts the smoke runs reach.)
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "studies/summary.h"

using namespace minnow;
using namespace minnow::app;
namespace fs = std::filesystem;

namespace {

std::string read_all(const fs::path& p) {
    std::ifstream in(p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

TEST_CASE("study templates: fill_text replaces every placeholder and fails on missing or unused values") {
    CHECK(fill_text("a {{x}} b {{y}} {{x}}\n", {{"x", "1"}, {"y", "{{z}}"}}, "t") == "a 1 b {{z}} 1\n");
    CHECK(template_placeholders("{{b}} {{a}} {{b}}", "t") == std::vector<std::string>{"b", "a"});
    CHECK_THROWS_WITH_AS(fill_text("{{x}} {{y}}", {{"x", "1"}}, "t.md"),
                         "summary template t.md: no value for placeholder {{y}}", Error);
    CHECK_THROWS_WITH_AS(fill_text("{{x}}", {{"x", "1"}, {"extra", "2"}}, "t.md"),
                         "summary template t.md: value 'extra' given but the template has no {{extra}}", Error);
    CHECK_THROWS_AS(fill_text("{{x", {}, "t.md"), Error);
    CHECK_THROWS_AS(fill_text("{{Not a name}}", {}, "t.md"), Error);
    CHECK_THROWS_WITH_AS(read_template("no_such_study/summary"),
                         doctest::Contains("no_such_study/summary.md is missing"), Error);
}

TEST_CASE("study templates: each is used by its study, which names every placeholder") {
    const fs::path studies = fs::path(MINNOW_SOURCE_DIR) / "studies";
    const std::string shared = read_all(studies / "study.h");
    int templates = 0;
    for (const auto& dir : fs::directory_iterator(studies / "templates")) {
        REQUIRE(dir.is_directory());
        const std::string study = dir.path().filename().string();
        const fs::path source = studies / ("study_" + study + ".cpp");
        REQUIRE_MESSAGE(fs::exists(source), "templates/" << study << "/ has no studies/study_" << study << ".cpp");
        const std::string code = read_all(source);
        bool has_summary = false;
        for (const auto& file : fs::directory_iterator(dir.path())) {
            REQUIRE(file.path().extension() == ".md");
            const std::string name = study + "/" + file.path().stem().string();
            has_summary |= file.path().stem() == "summary";
            ++templates;
            CHECK_MESSAGE(code.find("\"" + name + "\"") != std::string::npos,
                          source.filename().string() << " never fills template " << name);
            for (const auto& key : template_placeholders(read_all(file.path()), name))
                CHECK_MESSAGE((code + shared).find("\"" + key + "\"") != std::string::npos,
                              name << ".md: no value named \"" << key << "\" in " << source.filename().string());
        }
        CHECK_MESSAGE(has_summary, "templates/" << study << "/ has no summary.md");
    }
    CHECK(templates > 6);
}
