// C++ main with lazily linked C++ code (lazy_cxx_shapes.cpp): virtual dispatch into a lazy
// object, its global constructor/destructor, std::string across the boundary.
#include <iostream>
#include <memory>
#include <string>

struct Shape {
    virtual ~Shape() = default;
    virtual std::string describe() const = 0;
    virtual long area() const = 0;
};

Shape *make_shape(const std::string &kind, long a);  // lazy

int main() {
    std::unique_ptr<Shape> sq(make_shape("square", 6));
    std::unique_ptr<Shape> tri(make_shape("triangle", 8));
    std::cout << sq->describe() << " area " << sq->area() << "\n";
    std::cout << tri->describe() << " area " << tri->area() << std::endl;
    return static_cast<int>(sq->area() + tri->area()) % 256;
}
