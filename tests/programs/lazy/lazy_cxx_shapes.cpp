#include <cstdio>
#include <string>

struct Shape {
    virtual ~Shape() = default;
    virtual std::string describe() const = 0;
    virtual long area() const = 0;
};

namespace {
struct Square : Shape {
    long s;
    explicit Square(long s) : s(s) {}
    std::string describe() const override { return "square(" + std::to_string(s) + ")"; }
    long area() const override { return s * s; }
};
struct Triangle : Shape {
    long b;
    explicit Triangle(long b) : b(b) {}
    std::string describe() const override { return "triangle(" + std::to_string(b) + ")"; }
    long area() const override { return b * b / 2; }
};
struct Announce {
    Announce() { std::puts("shapes: global constructor"); }
    ~Announce() { std::puts("shapes: global destructor"); }
} announce;
}  // namespace

Shape *make_shape(const std::string &kind, long a) {
    if (kind == "square") return new Square(a);
    return new Triangle(a);
}
