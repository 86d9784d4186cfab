// std::exit() from JIT'd main: libc's exit runs in the executor process, flushes C stdio
// and ends it with that status; the controller reports the lost connection. Neither the
// JIT'd atexit() handler nor the global destructor runs (they belong to the ORC runtime).
#include <cstdio>
#include <cstdlib>
#include <iostream>

struct Global {
    ~Global() { std::puts("global destructor ran"); }
} global;

static void at_exit_handler() { std::puts("atexit handler ran"); }

int main() {
    std::atexit(at_exit_handler);
    std::cout << "calling exit(4)" << std::endl;
    std::printf("still buffered when exit is called\n");
    std::exit(4);
}
