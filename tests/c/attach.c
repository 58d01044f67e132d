/* A program that runs without stackheap and is attached to while it runs.
 *
 * Before the attach it allocates PRE blocks of 100 bytes and prints "ready <pid>".
 * Then it waits, in one of three ways (argv[1]): "read" blocks in read(2) on stdin
 * until a line comes; "sleep" loops in nanosleep until the file argv[2] exists;
 * "spin" computes in a loop, checking for argv[2] every few million iterations.
 * Then it makes exactly known allocations, frees blocks made before the attach, prints
 * "done" and waits for one more line on stdin (or EOF); then, unobserved, it
 * allocates and frees some more (after a detach this must still work) and exits 0.
 *
 * After the attach, through every function of the family:
 *   8 x malloc(1000), 6 freed; 4 x calloc(10, 100), all freed; 1 x posix_memalign(64,
 *   4096), kept; realloc of a pre-attach block to 300 bytes, kept; 7 other pre-attach
 *   blocks freed.
 *   allocations 14, bytes 16396, known frees 10, frees of pre-attach blocks 8,
 *   live at the end 6396 bytes in 4 blocks.
 * Only write(2) and read(2) are used after the attach: no stdio buffer appears.
 *
 * With a third argument, a shared library (tests/c/attach_lib.c) is loaded with dlopen
 * after the attach and its lib_alloc(777) is called and kept: a library loaded after
 * the attach must be hooked too (dlopen's own allocations make the totals inexact).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PRE 10

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

static void read_line(void) {
    char c;
    while (read(0, &c, 1) == 1 && c != '\n') {
    }
}

volatile unsigned long sink;

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "read";
    const char *flag = argc > 2 ? argv[2] : "";
    void *pre[PRE];
    for (int i = 0; i < PRE; i++) pre[i] = malloc(100);
    char line[64];
    snprintf(line, sizeof line, "ready %d\n", (int)getpid());
    say(line);

    if (strcmp(mode, "read") == 0) {
        read_line();
    } else if (strcmp(mode, "sleep") == 0) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        while (access(flag, F_OK) != 0) nanosleep(&ts, NULL);
    } else {
        /* The FPU state must survive the injection: acc lives in an SSE register
         * through the loop and must still equal the count at the end. */
        double acc = 0;
        unsigned long i;
        for (i = 1;; i++) {
            acc += 1.0;
            sink = sink * 31 + i;
            if (i % 4000000 == 0 && access(flag, F_OK) == 0) break;
        }
        if (acc != (double)i) {
            say("fpu state lost\n");
            return 4;
        }
    }

    void *m[8];
    for (int i = 0; i < 8; i++) m[i] = malloc(1000);
    for (int i = 0; i < 6; i++) free(m[i]);
    void *c[4];
    for (int i = 0; i < 4; i++) c[i] = calloc(10, 100);
    for (int i = 0; i < 4; i++) free(c[i]);
    void *a = NULL;
    if (posix_memalign(&a, 64, 4096) != 0) return 2;
    void *r = realloc(pre[0], 300);
    for (int i = 1; i < 8; i++) free(pre[i]);
    sink += (unsigned long)m[6] + (unsigned long)m[7] + (unsigned long)a + (unsigned long)r;
    if (argc > 3) {
        void *h = dlopen(argv[3], RTLD_NOW);
        void *(*lib_alloc)(unsigned long) = h ? (void *(*)(unsigned long))dlsym(h, "lib_alloc") : NULL;
        if (!lib_alloc) return 3;
        sink += (unsigned long)lib_alloc(777);
    }
    say("done\n");

    read_line();
    for (int i = 0; i < 1000; i++) free(malloc(64 + i));
    say("bye\n");
    return 0;
}
