#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

struct AppError : std::runtime_error {
    int code;
    AppError(const std::string &what, int code);
    ~AppError() override;
};

struct ParseError : AppError {
    int line;
    ParseError(const std::string &what, int line);
    ~ParseError() override;
};

struct Guard {
    const char *name;
    explicit Guard(const char *name);
    ~Guard();
};

int deep_throw(int depth);
int call_through(int (*cb)(int), int arg);
int element_at(const std::vector<int> &v, std::size_t i);
int parse_int(const std::string &s);
void rethrow_as_app_error();
