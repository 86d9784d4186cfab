// Main object: a global, virtual dispatch over shapes registered by other objects' global
// constructors, static locals, std::cout. Exit code: the number of shapes.
#include <algorithm>
#include <iostream>

#include "shapes.h"

namespace {
struct GlobalMain {
    GlobalMain() { constructed("main"); }
    ~GlobalMain() { destroyed("main"); }
} global_main;

int calls() {
    static int count = 0;  // static local
    return ++count;
}

const char *yes(bool b) { return b ? "yes" : "NO"; }
}  // namespace

int main(int argc, char **argv) {
    std::cout << "main: argc=" << argc;
    for (int i = 0; i < argc; ++i) std::cout << " [" << argv[i] << "]";
    std::cout << "\n";
    std::cout << "constructed before main: " << constructed_count() << "\n";
    std::cout << "B1 before B22: " << yes(constructed_before("B1", "B22")) << "\n";
    std::cout << "priority 101 before B1: " << yes(priority_ctor_ran_first()) << "\n";
    registry().push_back(make_square(5));
    std::vector<Shape *> shapes = registry();
    std::sort(shapes.begin(), shapes.end(),
              [](const Shape *a, const Shape *b) { return a->area() < b->area(); });
    long total = 0;
    for (const Shape *s : shapes) {
        std::cout << s->name() << " area " << s->area() << "\n";  // virtual calls
        total += s->area();
    }
    calls();
    calls();
    std::cout << "total " << total << ", calls " << calls() << std::endl;
    int n = static_cast<int>(registry().size());
    for (Shape *s : registry()) delete s;
    registry().clear();
    return n;
}
