/* Calls into libm (resolved from the executor process). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    double acc = 0;
    for (int i = 0; i < argc; i++) {
        double x = strtod(argv[i], NULL);
        double r = sqrt(fabs(x)) + sin(x) * cos(x) + log1p(fabs(x)) + pow(x, 3) + atan2(x, 2.0);
        printf("f(%s)=%.9g\n", argv[i], r);
        acc += r;
    }
    printf("sum=%.9g floor=%g\n", acc, floor(acc));
    return (int)fmod(fabs(floor(acc)), 128.0);
}
