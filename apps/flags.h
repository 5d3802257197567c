// apps/flags.h: the command line of every app and study: each flag checked
// when it is parsed (with its own name in the message), the folders and files
// an app will write checked first thing in its run (require_writable_*: they
// also cover a default --out), and the exit codes.
//
//     CLI::App app{"train_cifar: ..."};
//     app.add_option("--epochs", o.epochs, "epochs")->check(flag::whole(1, 100000));
//     app.add_option("--lr", o.lr, "learning rate")->check(flag::real(0, 1e6));
//     return run_app(app, argc, argv, [&] {
//         require_writable_folder(o.out, "--out");
//         return run(o);
//     });
//
// Exit codes (README, "Exit codes"):
//   0  done
//   1  failed while running: a file that cannot be read or written, bad data, out of memory
//   2  bad command line: a flag's value, an unknown flag, flags that contradict each other
//      or the checkpoint being resumed; found before any training
//   3  training diverged: a loss, gradient, weight, statistic or test loss is not finite;
//      the last checkpoint (if any) is the one of the last finite epoch
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <new>
#include <string>
#include <thread>
#include <unistd.h>

#include "core/error.h"
#include "core/parallel.h"
#include "dist/comm.h"

namespace minnow::app {

enum ExitCode : int { kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitDiverged = 3 };

// A mistake in the command line that shows only after parsing (a flag that
// contradicts the checkpoint being resumed, a batch larger than the data):
// exit code 2, like a flag refused at parse time.
struct UsageError : Error {
    using Error::Error;
};

// Checks of a folder or file an app will write: a folder is created if it is
// missing; a file's folder must exist or be creatable, and the file itself
// must not be a directory. Each writes and removes a probe file, so an
// unwritable place is found now, not after an epoch. Throw UsageError naming
// `flag` and the path.
inline void require_writable_folder(const std::string& path, const std::string& flag) {
    namespace fs = std::filesystem;
    const std::string who = flag + " " + path + ": ";
    std::error_code ec;
    if (fs::exists(path, ec) && !fs::is_directory(path, ec)) throw UsageError(who + "exists and is not a folder");
    fs::create_directories(path, ec);
    if (ec) throw UsageError(who + "cannot create the folder (" + ec.message() + ")");
    const std::string probe = (fs::path(path) / (".minnow-write-probe." + std::to_string(::getpid()))).string();
    std::FILE* f = std::fopen(probe.c_str(), "wb");
    if (!f) throw UsageError(who + "cannot write in this folder (" + std::strerror(errno) + ")");
    std::fclose(f);
    fs::remove(probe, ec);
}

inline void require_writable_file(const std::string& path, const std::string& flag) {
    namespace fs = std::filesystem;
    const std::string who = flag + " " + path + ": ";
    std::error_code ec;
    if (path.empty()) throw UsageError(who + "an empty path");
    if (fs::is_directory(path, ec)) throw UsageError(who + "is a folder, expected a file name");
    if (fs::exists(path, ec) && !fs::is_regular_file(path, ec))
        throw UsageError(who + "exists and is not a regular file");
    const fs::path parent = fs::path(path).parent_path();
    // The file is written as a temporary beside it, then renamed: the folder
    // must be writable, not only the file.
    require_writable_folder(parent.empty() ? "." : parent.string(), flag + "'s folder");
}

namespace flag {

// Whole numbers in [lo, hi] (CLI11 refuses non-numbers and fractions itself).
inline CLI::Validator whole(int64_t lo, int64_t hi) {
    return CLI::Validator(
        [lo, hi](std::string& s) -> std::string {
            errno = 0;
            char* end = nullptr;
            const long long v = std::strtoll(s.c_str(), &end, 0);
            if (end == s.c_str() || errno == ERANGE || v < lo || v > hi)
                return "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) +
                       ", got '" + s + "'";
            return "";
        },
        "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

// Finite real numbers in [lo, hi] (or (lo, hi] with open_lo): NaN and
// infinities are refused, as are values that overflow a double.
inline CLI::Validator real(double lo, double hi, bool open_lo = false) {
    auto text = [](double v) {
        char b[32];
        std::snprintf(b, sizeof b, "%g", v);
        return std::string(b);
    };
    const std::string range = (open_lo ? "(" : "[") + text(lo) + ", " + text(hi) + "]";
    return CLI::Validator(
        [=](std::string& s) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(s.c_str(), &end);
            if (end == s.c_str() || !std::isfinite(v) || v < lo || (open_lo && v == lo) || v > hi)
                return "must be a finite number in " + range + ", got '" + s + "'";
            return "";
        },
        "in " + range);
}

// --threads: 1..kMaxThreads (more threads than cores only warns, in setup_threads).
inline CLI::Validator threads() { return whole(1, kMaxThreads); }

}  // namespace flag

// MINNOW_NUM_THREADS, then --threads (0: not given), with a warning when
// there are more threads than cores.
inline void setup_threads(int threads) {
    init_threads_from_env();
    if (threads > 0) set_num_threads(threads);
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores > 0 && static_cast<unsigned>(get_num_threads()) > cores)
        std::fprintf(stderr, "warning: %d threads on %u cores: each step will be slower than with %u\n",
                     get_num_threads(), cores, cores);
}

// A program's main after its flags are declared: parses them (a mistake is
// exit code 2 with CLI11's message, which names the flag), runs `body`, and
// turns what it throws into "<app>: <what>" on stderr and the exit codes
// above (in a job of several ranks, dist/comm.h, it stops the whole job). Output that could not be written (a full disk behind stdout) is an
// error too.
inline int run_app(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
    const std::string name = std::filesystem::path(argv[0]).filename().string();
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "%s: %s\nRun with --help for the flags and their ranges.\n", name.c_str(), e.what());
        return kExitUsage;
    }
    int code = kExitFailed;
    std::string error;
    try {
        code = body();
    } catch (const UsageError& e) {
        error = e.what();
        code = kExitUsage;
    } catch (const std::bad_alloc&) {
        error = "out of memory (try a smaller --batch-size or fewer images)";
        code = kExitFailed;
    } catch (const std::exception& e) {
        error = e.what();
        code = kExitFailed;
    }
    if (!error.empty() && dist::size() > 1) {
        // The other ranks may be waiting in a collective for this one: the
        // whole job stops, with this rank's message (dist::abort_job names it).
        dist::abort_job(name + ": " + error, code);
    }
    if (!error.empty()) std::fprintf(stderr, "%s: %s\n", name.c_str(), error.c_str());
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
        std::fprintf(stderr, "%s: cannot write the output (%s)\n", name.c_str(), std::strerror(errno));
        if (code == kExitOk) code = kExitFailed;
    }
    return code;
}

}  // namespace minnow::app
