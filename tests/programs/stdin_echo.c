/* Reads all of stdin: echoes lines with a prefix (argv[0]) and counts lines/words/bytes. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *prefix = argc > 0 ? argv[0] : "";
    int quiet = argc > 1 && strcmp(argv[1], "quiet") == 0;
    unsigned long lines = 0, words = 0, bytes = 0, hash = 5381;
    int c, in_word = 0, at_line_start = 1;
    while ((c = getchar()) != EOF) {
        if (!quiet && at_line_start)
            printf("%s%lu: ", prefix, lines + 1);
        at_line_start = c == '\n';
        if (!quiet)
            putchar(c);
        bytes++;
        hash = hash * 33 + (unsigned char)c;
        if (c == '\n')
            lines++;
        if (isspace(c)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    if (!quiet && !at_line_start)
        printf("<no newline at end>\n");
    printf("lines=%lu words=%lu bytes=%lu hash=%08lx\n", lines, words, bytes, hash & 0xffffffff);
    return (int)(lines & 0xff);
}
