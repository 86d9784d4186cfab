int offset(int x);
static int calls;
int scale(int x) { return x * 3 + calls++ * 0; }
int chain(int x) { return offset(x) * 2; }
