/* MiBs of data: a 4 MiB initialized (writable) .data table and a 16 MiB zero-filled .bss array. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* V(i): a scrambled 64-bit value of the index i, folded at compile time. */
#define V(i) (((uint64_t)(i) * 0x9E3779B97F4A7C15ull) ^ 0x5bd1e9955bd1e995ull)
#define H1(p) V(p##0), V(p##1), V(p##2), V(p##3), V(p##4), V(p##5), V(p##6), V(p##7), \
              V(p##8), V(p##9), V(p##a), V(p##b), V(p##c), V(p##d), V(p##e), V(p##f)
#define H2(p) H1(p##0), H1(p##1), H1(p##2), H1(p##3), H1(p##4), H1(p##5), H1(p##6), H1(p##7), \
              H1(p##8), H1(p##9), H1(p##a), H1(p##b), H1(p##c), H1(p##d), H1(p##e), H1(p##f)
#define H3(p) H2(p##0), H2(p##1), H2(p##2), H2(p##3), H2(p##4), H2(p##5), H2(p##6), H2(p##7), \
              H2(p##8), H2(p##9), H2(p##a), H2(p##b), H2(p##c), H2(p##d), H2(p##e), H2(p##f)
#define H4(p) H3(p##0), H3(p##1), H3(p##2), H3(p##3), H3(p##4), H3(p##5), H3(p##6), H3(p##7), \
              H3(p##8), H3(p##9), H3(p##a), H3(p##b), H3(p##c), H3(p##d), H3(p##e), H3(p##f)

#define N (1u << 19) /* 512 Ki entries of 8 bytes = 4 MiB */
uint64_t table[N] = {H4(0x0), H4(0x1), H4(0x2), H4(0x3), H4(0x4), H4(0x5), H4(0x6), H4(0x7)};

#define BSS_SIZE (16u << 20)
static unsigned char zeros[BSS_SIZE];

static uint64_t table_checksum(void) {
    uint64_t s = 0;
    for (uint32_t i = 0; i < N; i++)
        s = s * 31 + (table[i] ^ i);
    return s;
}

int main(int argc, char **argv) {
    uint32_t idx = argc > 0 ? (uint32_t)strtoul(argv[0], NULL, 0) % N : 0;
    int fill = argc > 1 ? atoi(argv[1]) & 0xff : 1;
    uint32_t bad = 0;
    for (uint32_t i = 0; i < N; i++)
        bad += table[i] != V(i);
    printf("table: %zu bytes, mismatches=%u checksum=%016llx\n", sizeof table, bad,
           (unsigned long long)table_checksum());
    printf("table[%u]=%016llx\n", idx, (unsigned long long)table[idx]);
    table[idx] = ~table[idx];
    printf("after write: checksum=%016llx\n", (unsigned long long)table_checksum());

    size_t nonzero = 0;
    for (size_t i = 0; i < BSS_SIZE; i++)
        nonzero += zeros[i] != 0;
    memset(zeros + BSS_SIZE / 2, fill, BSS_SIZE / 2);
    uint64_t bss_sum = 0;
    for (size_t i = 0; i < BSS_SIZE; i += 4096)
        bss_sum += zeros[i] + zeros[BSS_SIZE - 1 - i];
    printf("bss: %u bytes, nonzero=%zu, sum after fill %d = %llu\n", BSS_SIZE, nonzero, fill,
           (unsigned long long)bss_sum);
    return (int)((table_checksum() ^ bss_sum) & 0x7f);
}
