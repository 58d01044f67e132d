/* A library that tests/c/attach.c loads with dlopen after stackheap attached: its
 * malloc binding did not exist at the attach and must be hooked when it is loaded. */
#include <stdlib.h>

void *lib_alloc(unsigned long n) { return malloc(n); }
