// thread_local in main and in std::threads (build at -O0: JITLink 22 rejects the TLSLD
// relocations gcc emits at -O1 and above). Exit code: 0 if every thread saw its own copies.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

thread_local int counter = 100;         // static TLS init (.tdata)
thread_local long zeroed;               // .tbss
static thread_local std::string label;  // dynamic TLS init + destructor per thread

struct Tracker {
    int id = -1;
    ~Tracker() {
        if (id >= 0) std::printf("thread %d: tracker destroyed (counter=%d)\n", id, counter);
    }
};
static thread_local Tracker tracker;  // destructor runs at each thread's exit

static int results[8];

static void work(int id) {
    for (int i = 0; i <= id; ++i) ++counter;
    zeroed += id * 1000;
    label = "thread-" + std::to_string(id);
    std::this_thread::yield();
    results[id] = counter * 10000 + static_cast<int>(zeroed) + static_cast<int>(label.size());
}

int main() {
    counter += 5;
    label = "main";
    // Concurrent threads: each must see fresh copies (counter 100, zeroed 0, label "").
    std::vector<std::thread> pool;
    for (int i = 0; i < 8; ++i) pool.emplace_back(work, i);
    for (auto &t : pool) t.join();
    int bad = 0;
    for (int i = 0; i < 8; ++i) {
        int expect = (101 + i) * 10000 + i * 1000 + 8;
        std::printf("results[%d] = %d%s\n", i, results[i], results[i] == expect ? "" : " WRONG");
        bad += results[i] != expect;
    }
    // One thread at a time so the thread_local destructors' output is ordered.
    for (int i = 0; i < 3; ++i) {
        std::thread([i] {
            tracker.id = i;
            counter = i * 7;
        }).join();
    }
    std::printf("main: counter=%d zeroed=%ld label=%s\n", counter, zeroed, label.c_str());
    return bad;
}
