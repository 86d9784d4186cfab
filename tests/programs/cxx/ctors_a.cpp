// Object A: the registry (a static local), the construction log, a global with ctor/dtor,
// and Square.
#include <cstdio>
#include <cstring>
#include <vector>

#include "shapes.h"

Shape::~Shape() {}

std::vector<Shape *> &registry() {
    static std::vector<Shape *> shapes;  // static local: constructed on first call
    return shapes;
}

namespace {
// Plain arrays: no destructor, usable from every global constructor and destructor.
const char *order[16];
int depth, total, violations;
}  // namespace

void constructed(const char *name) {
    order[depth++] = name;
    ++total;
}

void destroyed(const char *name) {
    if (depth == 0 || std::strcmp(order[depth - 1], name) != 0) ++violations;
    --depth;
    if (depth == 0)
        std::printf("destroyed %d globals, %s\n", total,
                    violations ? "NOT in reverse order" : "in reverse construction order");
}

bool constructed_before(const char *first, const char *second) {
    int a = -1, b = -1;
    for (int i = 0; i < total && i < 16; ++i) {
        if (order[i] && std::strcmp(order[i], first) == 0) a = i;
        if (order[i] && std::strcmp(order[i], second) == 0) b = i;
    }
    return a >= 0 && b >= 0 && a < b;
}

int constructed_count() { return total; }

namespace {
struct Square : Shape {
    long s;
    explicit Square(long s) : s(s) {}
    const char *name() const override { return "square"; }
    long area() const override { return s * s; }
};

struct GlobalA {
    GlobalA() {
        constructed("A");
        registry().push_back(make_square(3));
    }
    ~GlobalA() { destroyed("A"); }
} global_a;
}  // namespace

Shape *make_square(long side) { return new Square(side); }
