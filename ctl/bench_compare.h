/* Comparing two receipts figure by figure: the medians, their ratio, and whether the
 * difference is beyond the runs' own spread (their ranges of repeats do not overlap). */
#ifndef BITNET_CTL_BENCH_COMPARE_H
#define BITNET_CTL_BENCH_COMPARE_H

#include <json-c/json.h>
#include <stdbool.h>

#include "ctl/bench_receipt.h"

struct figure_stats {
    double median, min, max;
    int n;
};

/* The statistics of a receipt's figure; 1 when it has none (or no repeats). */
int bench_figure_stats(json_object *receipt, const char *name, struct figure_stats *out);

struct figure_cmp {
    const struct bench_figure_info *info;
    struct figure_stats a, b;
    double ratio;        /* b.median / a.median */
    double change;       /* the relative change, positive when b is better */
    bool beyond_noise;   /* the ranges of repeats do not overlap */
    bool comparable;     /* same host, or a figure relative to the host's bandwidth */
};

/* Every known figure both receipts have, in bench_figures' order; returns how many were
 * written to out (at most cap). *same_host: both ran on one host. */
int bench_compare(json_object *a, json_object *b, struct figure_cmp *out, int cap, bool *same_host);

/* The regression bench check looks for: a checked, comparable figure whose median got
 * worse by more than max_regression (a fraction) with the ranges apart. */
bool bench_is_regression(const struct figure_cmp *c, double max_regression);

/* {"name", "unit", "a": {median,min,max,n}, "b": ..., "ratio", "change", "beyond_noise",
 * "comparable", "higher_is_better"} */
json_object *bench_figure_cmp_json(const struct figure_cmp *c);
json_object *bench_figure_stats_json(const struct figure_stats *s);

#endif
