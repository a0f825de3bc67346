/* Charts of benchmark figures as standalone SVG (no scripts, no external resources):
 * one series per label, each point with its spread as an error bar, labelled axes and a
 * legend. */
#ifndef BITNET_CTL_BENCH_PLOT_H
#define BITNET_CTL_BENCH_PLOT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "model/errbuf.h"

struct plot_point {
    double x, y, lo, hi;   /* the median and its range of repeats */
    int64_t run_id;
};

struct plot_series {
    char label[256];
    struct plot_point *points;
    int n, cap;
};

/* Appends a point to s (growing it); -1 when out of memory. */
int plot_series_add(struct plot_series *s, const struct plot_point *p);

struct plot_axes {
    const char *title;
    const char *x_label, *y_label;   /* with their units */
    bool x_is_time;                  /* x in Unix seconds, ticks as UTC dates */
};

/* Writes the chart; -1 with e set when out fails (named `name` in the message). */
int bench_plot_svg(FILE *out, const char *name, const struct plot_axes *axes,
                   const struct plot_series *series, int n_series, struct errbuf *e);

#endif
