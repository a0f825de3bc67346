/* Receipts as chart series (bench plot, bench sweep). */
#ifndef BITNET_CTL_BENCH_CHART_H
#define BITNET_CTL_BENCH_CHART_H

#include <json-c/json.h>
#include <stdbool.h>

#include "ctl/bench_plot.h"

/* Series of metric over the receipts in runs (a JSON array): one per host and placement
 * with x the run's time, or, by_sweep_value, one per placement with x the swept
 * setting's value. Runs without the figure are left out. *out is freed with
 * bench_series_free. -1 when out of memory. */
int bench_history_series(json_object *runs, const char *metric, bool by_sweep_value,
                         struct plot_series **out, int *n_out);
void bench_series_free(struct plot_series *series, int n);

/* Writes the chart to path; -1 with the error printed. */
int bench_write_chart(const char *path, const struct plot_axes *axes, const struct plot_series *series,
                      int n_series);

#endif
