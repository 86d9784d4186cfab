// std::cout / std::cerr formatting, standard containers and algorithms, and std::atexit.
// Under llvm-jitlink 22 + ORC runtime, JIT'd atexit() handlers go to the runtime's
// platform JITDylib and are not run before the executor exits (same with the stock
// executor). Exit code 3.
#include <algorithm>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

static void at_exit_handler() { std::cout << "atexit handler ran" << std::endl; }

int main() {
    if (std::atexit(at_exit_handler) != 0) return 99;
    std::vector<std::string> words{"pear", "apple", "fig", "banana", "apple"};
    std::sort(words.begin(), words.end());
    std::map<std::string, int> counts;
    for (const auto &w : words) ++counts[w];
    for (const auto &[w, n] : counts) std::cout << std::setw(8) << w << " x" << n << "\n";
    std::ostringstream os;
    os << std::hex << std::showbase << 48879 << ' ' << std::fixed << std::setprecision(3) << 3.14159;
    std::cout << os.str() << "\n";
    auto p = std::make_unique<std::vector<int>>(5, 7);
    std::cout << "sum=" << std::accumulate(p->begin(), p->end(), 0) << std::endl;
    std::cerr << "to stderr: " << p->size() << std::endl;
    std::clog << "clog line" << std::endl;
    return 3;
}
