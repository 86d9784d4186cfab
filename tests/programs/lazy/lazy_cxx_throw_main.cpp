// An exception thrown by lazily linked code (lazy_cxx_throw.cpp) and caught here. With
// LLVM 22 the teardown afterwards sometimes aborts in libgcc's __deregister_frame (called by
// the ORC runtime while the controller releases memory), with the stock executor as well:
// stdout is then lost with the executor's buffers and llvm-jitlink reports "disconnecting".
#include <cstdio>

extern "C" int risky(int);

int main() {
    try {
        std::printf("risky(3)=%d\n", risky(3));
        risky(-1);
    } catch (int e) {
        std::printf("caught %d\n", e);
    }
    return 0;
}
