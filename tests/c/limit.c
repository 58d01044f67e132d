/* Allocates 1 MiB blocks until malloc returns NULL (at most 100), then prints how many
 * it got: under `stackheap run --limit 10MiB` that is exactly 10. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    static char buf[4096];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    void *blocks[100];
    int got = 0;
    while (got < 100) {
        void *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 1, 64);
        blocks[got++] = p;
    }
    printf("got=%d\n", got);
    for (int i = 0; i < got; i++) free(blocks[i]);
    return 0;
}
