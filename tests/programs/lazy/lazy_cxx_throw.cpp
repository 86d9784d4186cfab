extern "C" int risky(int x) {
    if (x < 0) throw x;
    return x * 2;
}
