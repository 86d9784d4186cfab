// Library half of the exceptions program: throws from several frames deep, through
// callbacks, and lets libstdc++ throw (std::vector::at, std::stoi).
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "exc.h"

AppError::AppError(const std::string &what, int code) : std::runtime_error(what), code(code) {}
AppError::~AppError() {}
ParseError::ParseError(const std::string &what, int line) : AppError(what, 2), line(line) {}
ParseError::~ParseError() {}

Guard::Guard(const char *name) : name(name) { std::printf("  enter %s\n", name); }
Guard::~Guard() { std::printf("  leave %s\n", name); }

int deep_throw(int depth) {
    Guard g(depth == 0 ? "deep_throw(0)" : "deep_throw(n)");
    if (depth == 0) throw ParseError("bad token", 42);
    return deep_throw(depth - 1) + 1;
}

int call_through(int (*cb)(int), int arg) {
    Guard g("call_through");
    return cb(arg) * 2;
}

int element_at(const std::vector<int> &v, std::size_t i) { return v.at(i); }

int parse_int(const std::string &s) { return std::stoi(s); }

void rethrow_as_app_error() {
    try {
        throw std::logic_error("inner logic error");
    } catch (const std::exception &e) {
        throw AppError(std::string("wrapped: ") + e.what(), 9);
    }
}
