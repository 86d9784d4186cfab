// C stdio must be buffered as in any C program: stdout on a pipe is fully buffered, so
// what main printed is lost when it calls abort(); stderr is unbuffered and gets through.
// (A Python process started with -u / PYTHONUNBUFFERED makes C stdio unbuffered too;
// orc-executor restores the C defaults.)
#include <cstdio>
#include <cstdlib>

int main() {
    std::printf("buffered on stdout, lost at abort\n");
    std::fputs("stderr is unbuffered\n", stderr);
    std::abort();
}
