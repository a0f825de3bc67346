/* The middle value every benchmark reports (their clock: model/clock.h). */
#ifndef BITNET_BENCH_TIMING_H
#define BITNET_BENCH_TIMING_H

/* Sorts v[0..n) ascending. */
void bench_sort(double *v, int n);

/* Sorts v[0..n) and returns v[n / 2]: the median of an odd count, the upper of the two
 * middle values of an even one. n >= 1. */
double bench_middle(double *v, int n);

#endif
