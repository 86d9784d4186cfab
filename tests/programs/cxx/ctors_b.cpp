// Object B: Rect, two globals (constructed in declaration order, destroyed in reverse) and a
// constructor with priority 101, which runs before this object's default-priority ones.
#include <string>

#include "shapes.h"

namespace {
// Zero-initialized before any constructor runs.
bool b1_done, early_ran, early_before_b1;

struct Rect : Shape {
    long w, h;
    Rect(long w, long h) : w(w), h(h) {}
    const char *name() const override { return "rect"; }
    long area() const override { return w * h; }
};

struct GlobalB {
    std::string tag;
    explicit GlobalB(const char *t) : tag(t) {
        constructed(t);
        b1_done = true;
        registry().push_back(make_rect(static_cast<long>(tag.size()), 10));
    }
    ~GlobalB() { destroyed(tag.c_str()); }
};

GlobalB b1("B1");
GlobalB b22("B22");

__attribute__((constructor(101))) void early() {
    early_ran = true;
    early_before_b1 = !b1_done;
}
}  // namespace

bool priority_ctor_ran_first() { return early_ran && early_before_b1; }

Shape *make_rect(long w, long h) { return new Rect(w, h); }
