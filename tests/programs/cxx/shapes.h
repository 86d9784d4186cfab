// Shared declarations for ctors_*.cpp: globals with constructors/destructors in several
// objects. The order in which objects' initializers run is unspecified (and varies between
// runs under llvm-jitlink), so the program checks the properties that are specified: every
// constructor ran before main, order within one object, priorities, and destruction in
// exact reverse order of construction. It prints only order-independent results.
#pragma once
#include <vector>

struct Shape {
    virtual ~Shape();
    virtual const char *name() const = 0;
    virtual long area() const = 0;
};

std::vector<Shape *> &registry();     // a function-local static
void constructed(const char *name);  // records construction order
void destroyed(const char *name);    // checks reverse order; the last one prints a summary
bool constructed_before(const char *first, const char *second);
int constructed_count();
bool priority_ctor_ran_first();      // ctors_b.cpp
Shape *make_square(long side);
Shape *make_rect(long w, long h);
