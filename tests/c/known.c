/* Known behaviour through every function of the malloc family, for the LD_PRELOAD
 * test. Every figure is counted here as it happens (requested sizes) and printed on
 * the `expected:` line: total allocation calls, frees, bytes, peak live bytes and the
 * leaked bytes and blocks at exit. stdout's buffer, which glibc allocates at the first
 * printf (BUFSIZ, or st_blksize when smaller), is counted too; it is never freed. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long allocs, frees, bytes, live, peak, live_blocks;

static void got(size_t n) {
    allocs++;
    bytes += n;
    live += n;
    live_blocks++;
    if (live > peak) peak = live;
}

static void gone(size_t n) {
    frees++;
    live -= n;
    live_blocks--;
}

#define CHECK(p)                                                    \
    do {                                                            \
        if (!(p)) { fprintf(stderr, "allocation failed\n"); exit(2); } \
    } while (0)

int main(void) {
    void *leaks[64];
    int nleaks = 0;

    /* malloc / free, 10 rounds of growing sizes; free(NULL) does nothing. */
    for (int i = 1; i <= 10; i++) {
        size_t n = (size_t)i * 100;
        char *p = malloc(n);
        CHECK(p);
        got(n);
        memset(p, 1, n);
        free(p);
        gone(n);
        free(NULL);
    }

    /* calloc */
    int *c = calloc(250, sizeof(int));
    CHECK(c);
    got(250 * sizeof(int));

    /* realloc growth: 1000 -> 5000 -> 20000, then shrink to 300 */
    char *r = malloc(1000);
    CHECK(r);
    got(1000);
    size_t sz = 1000;
    size_t steps[] = {5000, 20000, 300};
    for (int i = 0; i < 3; i++) {
        char *q = realloc(r, steps[i]);
        CHECK(q);
        gone(sz);
        got(steps[i]);
        r = q;
        sz = steps[i];
    }

    /* realloc(NULL, n) is malloc(n) */
    char *rn = realloc(NULL, 777);
    CHECK(rn);
    got(777);

    /* realloc(p, 0) frees p and returns NULL */
    char *rz = malloc(4321);
    CHECK(rz);
    got(4321);
    if (realloc(rz, 0) != NULL) { fprintf(stderr, "realloc(p, 0) returned a block\n"); exit(2); }
    gone(4321);

    /* reallocarray */
    long *ra = reallocarray(NULL, 40, sizeof(long));
    CHECK(ra);
    got(40 * sizeof(long));
    long *rb = reallocarray(ra, 80, sizeof(long));
    CHECK(rb);
    gone(40 * sizeof(long));
    got(80 * sizeof(long));

    /* aligned families */
    void *pm = NULL;
    if (posix_memalign(&pm, 64, 3000) != 0) { fprintf(stderr, "posix_memalign failed\n"); exit(2); }
    got(3000);
    void *aa = aligned_alloc(256, 2048);
    CHECK(aa);
    got(2048);
    void *ma = memalign(128, 1500);
    CHECK(ma);
    got(1500);
    void *va = valloc(5000);
    CHECK(va);
    got(5000);
    void *pv = pvalloc(100);
    CHECK(pv);
    got(100);
    if (malloc_usable_size(pv) < 100) { fprintf(stderr, "malloc_usable_size too small\n"); exit(2); }

    /* the peak: one big block, freed at once */
    char *big = malloc(1 << 20);
    CHECK(big);
    got(1 << 20);
    memset(big, 2, 1 << 20);
    free(big);
    gone(1 << 20);

    /* free some, leak the rest */
    free(c);
    gone(250 * sizeof(int));
    free(pm);
    gone(3000);
    free(va);
    gone(5000);
    leaks[nleaks++] = r;   /* 300 */
    leaks[nleaks++] = rn;  /* 777 */
    leaks[nleaks++] = rb;  /* 640 */
    leaks[nleaks++] = aa;  /* 2048 */
    leaks[nleaks++] = ma;  /* 1500 */
    leaks[nleaks++] = pv;  /* 100 */
    /* 7 leaked blocks of 33 bytes each */
    for (int i = 0; i < 7; i++) {
        void *p = malloc(33);
        CHECK(p);
        got(33);
        leaks[nleaks++] = p;
    }

    /* stdout's buffer, allocated by the printf below and never freed */
    struct stat st;
    size_t buf = BUFSIZ;
    if (fstat(1, &st) == 0 && st.st_blksize > 0 && (size_t)st.st_blksize < BUFSIZ)
        buf = st.st_blksize;
    got(buf);

    printf("expected: allocs=%lu frees=%lu bytes=%lu peak=%lu leaked_bytes=%lu leaked_blocks=%lu leaks_kept=%d\n",
           allocs, frees, bytes, peak, live, live_blocks, nleaks);
    return 0;
}
