/* THREADS threads (argv[1], default 8) each make PER allocations (argv[2], default
 * 1000000) of sizes 16..1039 bytes through malloc, calloc and realloc, freeing all but
 * every 1000th block, which stays live (leaked). The figures are exact and printed on
 * the `expected:` line; the peak depends on the interleaving and is only bounded. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static long per = 1000000;

struct result;
static struct result *results;

struct result {
    unsigned long allocs, frees, bytes, leaked_bytes, leaked_blocks;
};

static void *work(void *arg) {
    struct result *r = arg;
    unsigned seed = 1u + (unsigned)(r - results); /* the thread's index */
    for (long i = 0; i < per; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 16 + (seed >> 16) % 1024;
        char *p;
        switch (i % 3) {
        case 0:
            p = malloc(n);
            r->allocs++;
            r->bytes += n;
            break;
        case 1:
            p = calloc(1, n);
            r->allocs++;
            r->bytes += n;
            break;
        default: {
            char *q = malloc(8);
            r->allocs++;
            r->bytes += 8;
            p = realloc(q, n);
            r->allocs++;
            r->frees++;
            r->bytes += n;
        }
        }
        if (!p) { fprintf(stderr, "allocation failed\n"); exit(2); }
        p[0] = 1;
        if (i % 1000 == 999) {
            r->leaked_bytes += n;
            r->leaked_blocks++;
        } else {
            free(p);
            r->frees++;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    if (argc > 2) per = atol(argv[2]);
    pthread_t t[64];
    static struct result r[64];
    results = r;
    if (threads < 1 || threads > 64) { fprintf(stderr, "1..64 threads\n"); return 2; }
    /* Give stdout a static buffer: no allocation of libc's own in the figures. */
    static char buf[4096];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, &r[i]);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    struct result s = {0};
    for (int i = 0; i < threads; i++) {
        s.allocs += r[i].allocs;
        s.frees += r[i].frees;
        s.bytes += r[i].bytes;
        s.leaked_bytes += r[i].leaked_bytes;
        s.leaked_blocks += r[i].leaked_blocks;
    }
    printf("expected: allocs=%lu frees=%lu bytes=%lu leaked_bytes=%lu leaked_blocks=%lu\n",
           s.allocs, s.frees, s.bytes, s.leaked_bytes, s.leaked_blocks);
    return 0;
}
