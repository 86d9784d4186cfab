/* Compiled once per index (-DIDX=0..7) into lazy_f<IDX>.o: int f<IDX>(int). */
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
int CAT(f, IDX)(int x) { return (IDX + 1) * 1000 + x; }
