/* Forks twice. The first child does not exec: it keeps allocating (argv[1] blocks,
 * default 200000) and must run to completion (exit 0). The second child execs a shell
 * that prints what it inherited of the profiler's environment (`env:[TRACE][PRELOAD]`):
 * children are not profiled unless --follow-forks. The parent's own figures are exact. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    static char buf[4096];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    unsigned long allocs = 0, frees = 0, bytes = 0, leaked = 0;
    char *keep = malloc(5000);
    allocs++; bytes += 5000; leaked += 5000;
    for (int i = 0; i < 100; i++) {
        void *p = malloc(64 + i);
        allocs++; bytes += 64 + i;
        free(p);
        frees++;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 2; }
    if (child == 0) {
        unsigned long sum = 0;
        for (long i = 0; i < n; i++) {
            char *p = malloc(16 + i % 512);
            if (!p) _exit(3);
            p[0] = (char)i;
            sum += (unsigned char)p[0];
            free(p);
        }
        free(keep);
        printf("child done: %ld allocations (%lu)\n", n, sum % 7);
        fflush(stdout);
        exit(0);
    }
    /* allocate in the parent while the child runs */
    for (int i = 0; i < 1000; i++) {
        void *p = calloc(4, 32);
        allocs++; bytes += 128;
        free(p);
        frees++;
    }
    int st = 0;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "forked child failed (status %d)\n", st);
        return 1;
    }
    fflush(stdout);
    pid_t sh = fork();
    if (sh == 0) {
        execl("/bin/sh", "sh", "-c", "printf 'env:[%s][%s]\\n' \"$STACKHEAP_TRACE\" \"$LD_PRELOAD\"", (char *)0);
        _exit(127);
    }
    if (waitpid(sh, &st, 0) != sh || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "exec'd child failed (status %d)\n", st);
        return 1;
    }
    printf("expected: allocs=%lu frees=%lu bytes=%lu leaked_bytes=%lu leaked_blocks=1\n",
           allocs, frees, bytes, leaked);
    return 0;
}
