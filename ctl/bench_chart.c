/* Receipts as chart series, and charts written to files (bench plot, bench sweep). */
#include "ctl/bench_chart.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/bench_compare.h"
#include "ctl/bench_receipt.h"

int bench_history_series(json_object *runs, const char *metric, bool by_sweep_value,
                         struct plot_series **out, int *n_out)
{
    struct plot_series *series = NULL;
    int n = 0;
    size_t nr = json_object_array_length(runs);
    for (size_t i = 0; i < nr; i++) {
        json_object *r = json_object_array_get_idx(runs, i);
        struct figure_stats s;
        if (bench_figure_stats(r, metric, &s) != 0)
            continue;
        char label[256], place[200];
        bench_receipt_placement_label(r, place, sizeof place);
        if (by_sweep_value)
            snprintf(label, sizeof label, "%s", bench_json_str(r, "sweep.series", place));
        else
            snprintf(label, sizeof label, "%.40s: %s", bench_json_str(r, "host.name", "?"), place);
        int k = 0;
        while (k < n && strcmp(series[k].label, label) != 0)
            k++;
        if (k == n) {
            struct plot_series *grown = realloc(series, (size_t)(n + 1) * sizeof *grown);
            if (!grown)
                goto oom;
            series = grown;
            memset(&series[n], 0, sizeof series[n]);
            snprintf(series[n].label, sizeof series[n].label, "%s", label);
            n++;
        }
        struct plot_point p = {.x = by_sweep_value ? bench_json_num(r, "sweep.value", 0) : bench_json_num(r, "time_unix", 0),
                               .y = s.median, .lo = s.min, .hi = s.max,
                               .run_id = (int64_t)bench_json_num(r, "run_id", 0)};
        if (plot_series_add(&series[k], &p) < 0)
            goto oom;
    }
    *out = series;
    *n_out = n;
    return 0;
oom:
    bench_series_free(series, n);
    return -1;
}

void bench_series_free(struct plot_series *series, int n)
{
    for (int i = 0; i < n; i++)
        free(series[i].points);
    free(series);
}

int bench_write_chart(const char *path, const struct plot_axes *axes, const struct plot_series *series,
                      int n_series)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bitnetctl bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct errbuf e = {{0}};
    int rc = bench_plot_svg(f, path, axes, series, n_series, &e);
    if (fclose(f) != 0 && rc == 0)
        rc = err_set(&e, "%s: %s", path, strerror(errno));
    if (rc < 0)
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
    return rc;
}

