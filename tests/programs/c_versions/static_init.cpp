// C++ with the LLVM 19 ORC runtime: a static constructor and destructor (run by the runtime's
// initializer/deinitializer support), std::string and std::vector from libstdc++ (-preload).
// No exceptions: they abort under LLVM 19 out-of-process + ORC runtime (traces/README.md).
// Exit code = number of arguments + 1 (3 for "-args a b").
#include <cstdio>
#include <string>
#include <vector>

struct Announce {
    Announce() { std::printf("static init\n"); }
    ~Announce() { std::printf("static fini\n"); }
};
static Announce announce;

int main(int argc, char **argv) {
    std::vector<std::string> args(argv, argv + argc);
    std::string joined;
    for (const auto &a : args)
        joined += a + ";";
    std::printf("args=%s\n", joined.c_str());
    return static_cast<int>(args.size()) + 1;
}
