/* A thread that never allocates goes deep: 2000 frames of 256 bytes (about 600 KiB of
 * stack with the frames' overhead), then sleeps at the bottom so the stack-depth
 * sampler sees it. The main thread allocates nothing either (static stdout buffer). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int deep(int n) {
    volatile char pad[256];
    memset((char *)pad, n, sizeof pad);
    if (n == 0) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
        return pad[0];
    }
    return deep(n - 1) + pad[1];
}

static void *run(void *arg) {
    (void)arg;
    pthread_exit((void *)(long)deep(2000)); /* unwinds through the profiler's start frame */
}

int main(void) {
    static char buf[4096];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    pthread_join(t, NULL);
    printf("expected: min_depth=%d\n", 2000 * 256);
    return 0;
}
