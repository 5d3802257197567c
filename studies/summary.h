// studies/summary.h: the prose of the studies' summary.md files lives in
// templates, studies/templates/<study>/<part>.md, plain markdown with named
// placeholders {{name}}; a study measures, formats its numbers and tables as
// text, and fills a template with them:
//
//     md << fill_template("lr_sweep/summary", {{"budget", budget_text(...)}, {"table", md_table(...)}});
//
// The filler is strict both ways: a placeholder without a value and a value
// that no placeholder uses are errors naming the template and the name, so a
// template and its study cannot drift apart silently. A part that is a phrase
// inside a sentence (fill_phrase) drops the file's final newline.
//
// The templates are read at run time from the source tree the program was
// built from (MINNOW_SOURCE_DIR, a compile definition of every app and test).
// Depends on the library only, so tests/ can check every template.
#pragma once

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor.h"  // Error

#ifndef MINNOW_SOURCE_DIR
#error "studies/summary.h needs MINNOW_SOURCE_DIR (the source tree, where studies/templates/ is)"
#endif

namespace minnow::app {

using TemplateValues = std::map<std::string, std::string>;

// The file of template `name` ("lr_sweep/summary"): studies/templates/<name>.md.
inline std::string template_path(const std::string& name) {
    return std::string(MINNOW_SOURCE_DIR) + "/studies/templates/" + name + ".md";
}

inline std::string read_template(const std::string& name) {
    const std::string path = template_path(name);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("summary template " + path + " is missing (template '" + name + "')");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The placeholders of a template's text, each once, in order of first
// appearance. A "{{" without its "}}" or a name that is not [a-z0-9_] is an
// error naming `name`.
inline std::vector<std::string> template_placeholders(const std::string& text, const std::string& name) {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (size_t at = text.find("{{"); at != std::string::npos; at = text.find("{{", at)) {
        const size_t end = text.find("}}", at + 2);
        if (end == std::string::npos) throw Error("summary template " + name + ": a '{{' without '}}'");
        const std::string key = text.substr(at + 2, end - at - 2);
        if (key.empty() || key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
            throw Error("summary template " + name + ": '{{" + key + "}}' is not a placeholder name ([a-z0-9_])");
        if (seen.insert(key).second) out.push_back(key);
        at = end + 2;
    }
    return out;
}

// `text` (of template `name`, for the errors) with every {{key}} replaced by
// values.at(key). Throws if a placeholder has no value or a value is never
// used. Values are inserted as they are (a "{{" in a value is not expanded).
inline std::string fill_text(const std::string& text, const TemplateValues& values, const std::string& name) {
    const std::vector<std::string> keys = template_placeholders(text, name);
    for (const auto& key : keys)
        if (!values.count(key))
            throw Error("summary template " + name + ": no value for placeholder {{" + key + "}}");
    const std::set<std::string> used(keys.begin(), keys.end());
    for (const auto& [key, value] : values)
        if (!used.count(key))
            throw Error("summary template " + name + ": value '" + key + "' given but the template has no {{" + key +
                        "}}");
    std::string out;
    size_t from = 0;
    for (size_t at = text.find("{{"); at != std::string::npos; at = text.find("{{", from)) {
        const size_t end = text.find("}}", at + 2);
        out.append(text, from, at - from);
        out += values.at(text.substr(at + 2, end - at - 2));
        from = end + 2;
    }
    out.append(text, from, std::string::npos);
    return out;
}

// Template `name` (studies/templates/<name>.md) filled with `values`, as fill_text.
inline std::string fill_template(const std::string& name, const TemplateValues& values) {
    return fill_text(read_template(name), values, template_path(name));
}

// A template that is a phrase inside a sentence: its file's final newline dropped.
inline std::string fill_phrase(const std::string& name, const TemplateValues& values = {}) {
    std::string s = fill_template(name, values);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

}  // namespace minnow::app
