/* Figure statistics and comparisons of receipts. */
#include "ctl/bench_compare.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/timing.h"

int bench_figure_stats(json_object *receipt, const char *name, struct figure_stats *out)
{
    json_object *figures = bench_json_at(receipt, "figures"), *arr;
    if (!figures || !json_object_object_get_ex(figures, name, &arr) ||
        !json_object_is_type(arr, json_type_array))
        return 1;
    int n = (int)json_object_array_length(arr);
    if (n == 0)
        return 1;
    double *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return 1;
    for (int i = 0; i < n; i++)
        v[i] = json_object_get_double(json_object_array_get_idx(arr, i));
    bench_sort(v, n);
    out->n = n;
    out->min = v[0];
    out->max = v[n - 1];
    out->median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    free(v);
    return 0;
}

int bench_compare(json_object *a, json_object *b, struct figure_cmp *out, int cap, bool *same_host)
{
    *same_host = strcmp(bench_json_str(a, "host.name", "?"), bench_json_str(b, "host.name", "!")) == 0;
    int n = 0;
    for (int i = 0; i < bench_n_figures && n < cap; i++) {
        struct figure_cmp c = {.info = &bench_figures[i]};
        if (bench_figure_stats(a, c.info->name, &c.a) || bench_figure_stats(b, c.info->name, &c.b))
            continue;
        c.ratio = c.a.median != 0 ? c.b.median / c.a.median : NAN;
        double rel = c.a.median != 0 ? (c.b.median - c.a.median) / fabs(c.a.median) : 0.0;
        c.change = c.info->higher_is_better ? rel : -rel;
        c.beyond_noise = c.b.min > c.a.max || c.b.max < c.a.min;
        c.comparable = *same_host || c.info->cross_host;
        out[n++] = c;
    }
    return n;
}

bool bench_is_regression(const struct figure_cmp *c, double max_regression)
{
    return c->info->checked && c->comparable && c->beyond_noise && c->change < -max_regression;
}

json_object *bench_figure_stats_json(const struct figure_stats *s)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "median", json_object_new_double(s->median));
    json_object_object_add(j, "min", json_object_new_double(s->min));
    json_object_object_add(j, "max", json_object_new_double(s->max));
    json_object_object_add(j, "n", json_object_new_int(s->n));
    return j;
}

json_object *bench_figure_cmp_json(const struct figure_cmp *c)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "name", json_object_new_string(c->info->name));
    json_object_object_add(j, "unit", json_object_new_string(c->info->unit));
    json_object_object_add(j, "higher_is_better", json_object_new_boolean(c->info->higher_is_better));
    json_object_object_add(j, "a", bench_figure_stats_json(&c->a));
    json_object_object_add(j, "b", bench_figure_stats_json(&c->b));
    json_object_object_add(j, "ratio", isfinite(c->ratio) ? json_object_new_double(c->ratio) : NULL);
    json_object_object_add(j, "change", json_object_new_double(c->change));
    json_object_object_add(j, "beyond_noise", json_object_new_boolean(c->beyond_noise));
    json_object_object_add(j, "comparable", json_object_new_boolean(c->comparable));
    return j;
}
