/* Writes a file at the path given in argv[0], reads it back and prints it. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: PATH COUNT\n");
        return 2;
    }
    const char *path = argv[0];
    int count = atoi(argv[1]);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 3;
    }
    for (int i = 1; i <= count; i++)
        fprintf(f, "line %d of %d: %d squared is %d\n", i, count, i, i * i);
    if (fclose(f) != 0) {
        perror("fclose");
        return 4;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        perror("stat");
        return 5;
    }
    printf("wrote %s (%lld bytes)\n", path, (long long)st.st_size);
    f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 6;
    }
    char buf[256];
    int n = 0;
    while (fgets(buf, sizeof buf, f)) {
        n++;
        printf("read: %s", buf);
    }
    fclose(f);
    printf("read back %d lines\n", n);
    return n;
}
