// Exceptions thrown and caught across JIT'd frames (this object and exc_lib.cpp) and
// through libstdc++. Exit code: the number of exceptions caught.
#include <cstdio>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "exc.h"

static int caught = 0;

static int thrower_cb(int x) {
    Guard g("thrower_cb");
    if (x > 2) throw x;
    return x;
}

int main() {
    try {
        deep_throw(3);
    } catch (const AppError &e) {  // caught by base class
        ++caught;
        std::printf("AppError: %s code=%d line=%d\n", e.what(), e.code,
                    dynamic_cast<const ParseError &>(e).line);
    }
    try {
        call_through(thrower_cb, 7);
    } catch (int v) {
        ++caught;
        std::printf("int through callback: %d\n", v);
    }
    std::printf("no throw: %d\n", call_through(thrower_cb, 2));
    std::vector<int> v{1, 2, 3};
    try {
        element_at(v, 10);
    } catch (const std::out_of_range &e) {
        ++caught;
        std::printf("out_of_range caught\n");
    }
    for (const char *s : {"12", "x1", "99999999999999999999"}) {
        try {
            std::printf("stoi(%s) = %d\n", s, parse_int(s));
        } catch (const std::invalid_argument &e) {
            ++caught;
            std::printf("invalid_argument: %s\n", e.what());
        } catch (const std::out_of_range &e) {
            ++caught;
            std::printf("out_of_range: %s\n", e.what());
        }
    }
    try {
        rethrow_as_app_error();
    } catch (const std::exception &e) {
        ++caught;
        std::printf("std::exception: %s\n", e.what());
    }
    std::exception_ptr saved;
    try {
        throw std::runtime_error("saved for later");
    } catch (...) {
        saved = std::current_exception();
    }
    try {
        try {
            std::rethrow_exception(saved);
        } catch (const std::runtime_error &) {
            ++caught;
            throw;  // rethrow the same object
        }
    } catch (const std::exception &e) {
        ++caught;
        std::cout << "rethrown: " << e.what() << std::endl;
    }
    std::printf("caught %d\n", caught);
    return caught;
}
