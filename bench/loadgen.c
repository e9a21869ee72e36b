/* Load generator for bench/pipeline_capacity.sh: waits until a start file
 * exists, then calls getppid() `rate` times per second for `seconds`, paced
 * in 1 ms slots, and prints how many calls it made. Each call is one record
 * of the synthetic bench plugin. Usage: loadgen RATE SECONDS START_FILE */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s RATE SECONDS START_FILE\n", argv[0]);
    return 2;
  }
  const double rate = atof(argv[1]), seconds = atof(argv[2]);
  while (access(argv[3], F_OK) != 0) usleep(10000);
  const double start = now();
  unsigned long long calls = 0;
  for (;;) {
    double elapsed = now() - start;
    if (elapsed >= seconds) break;
    /* Catch up to where the schedule says we should be, 1 ms at a time. */
    unsigned long long due = (unsigned long long)(rate * (elapsed + 0.001));
    while (calls < due) {
      syscall(SYS_getppid);
      calls++;
    }
    while (now() - start < elapsed + 0.001 && calls >= due) {
    }
  }
  printf("%llu %.3f\n", calls, now() - start);
  return 0;
}
