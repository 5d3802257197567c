// minnow/layers/norm_factory.h: a normalisation layer for a conv net, by name.
//
// make_norm2d(kind, C) returns the layer that follows a conv with C output
// channels, for input [N, C, H, W]. The kinds are ONE table, norm2d_table()
// in norm_factory.cpp: each row is a name, a line of help and how to build
// the layer. Everything else reads that table: make_norm2d, the list of names
// (norm2d_kinds(), for command lines: CLI::IsMember(norm2d_kinds())), the help
// (norm2d_help()) and the Error for an unknown kind, which lists the valid
// ones. A new kind is one new row.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"

namespace minnow {

struct Norm2dKind {
    const char* name;  // "batch"
    const char* help;  // one line: what the layer is
    std::shared_ptr<Module> (*make)(int64_t channels);  // the layer for C >= 1 channels
};

// The kinds, in the order command lines and errors list them ("batch" first:
// the experiment's default).
const std::vector<Norm2dKind>& norm2d_table();

std::shared_ptr<Module> make_norm2d(const std::string& kind, int64_t channels);

// The names of the table, in its order.
const std::vector<std::string>& norm2d_kinds();

// One line naming every kind with its help: "batch: BatchNorm2d ...; none: ...".
// For a command line's --norm description.
std::string norm2d_help();

// The number of groups "group" uses for C channels: 32 as in Wu & He 2018 when
// that leaves at least 2 channels per group; otherwise the largest divisor of
// C that does (C = 64 -> 32 groups, 16 -> 8, 2 -> 1).
int64_t group_count(int64_t channels);

}  // namespace minnow
