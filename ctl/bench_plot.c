/* SVG charts. Coordinates are computed here, not left to a renderer: an SVG without
 * scripts must carry its ticks and labels as plain elements. */
#include "ctl/bench_plot.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PLOT_W 980.0
#define PLOT_H 500.0
#define MARGIN_L 90.0
#define MARGIN_R 340.0   /* the legend sits on the right */
#define MARGIN_T 50.0
#define MARGIN_B 70.0
#define PLOT_MAX_TICKS 50

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define PALETTE_N (sizeof palette / sizeof palette[0])

int plot_series_add(struct plot_series *s, const struct plot_point *p)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        struct plot_point *grown = realloc(s->points, (size_t)cap * sizeof *grown);
        if (!grown)
            return -1;
        s->points = grown;
        s->cap = cap;
    }
    s->points[s->n++] = *p;
    return 0;
}

static void put_escaped(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '&': fputs("&amp;", out); break;
        case '"': fputs("&quot;", out); break;
        default:
            /* control characters are not allowed in XML 1.0 text */
            if ((unsigned char)*s >= 0x20 || *s == '\t' || *s == '\n')
                fputc(*s, out);
        }
    }
}

/* A step of 1, 2 or 5 times a power of ten giving about `want` intervals over span. */
static double nice_step(double span, int want)
{
    double raw = span / want, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * p;
}

/* For time axes: steps of whole seconds, minutes, hours or days, so ticks fall on
 * round clock times. */
static double time_step(double span, int want)
{
    static const double steps[] = {1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                                   7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400,
                                   7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 365 * 86400};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (span / steps[i] <= want)
            return steps[i];
    return nice_step(span, want);
}

struct frame {
    double x0, x1, y0, y1;   /* data range */
};

static double px(const struct frame *f, double x)
{
    return MARGIN_L + (x - f->x0) / (f->x1 - f->x0) * (PLOT_W - MARGIN_L - MARGIN_R);
}

static double py(const struct frame *f, double y)
{
    return PLOT_H - MARGIN_B - (y - f->y0) / (f->y1 - f->y0) * (PLOT_H - MARGIN_T - MARGIN_B);
}

static void frame_of(const struct plot_series *series, int n_series, struct frame *f)
{
    bool any = false;
    f->x0 = f->x1 = 0.0;
    f->y0 = 0.0;   /* speeds and ratios read best from zero */
    f->y1 = 0.0;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            const struct plot_point *p = &series[s].points[i];
            if (!any || p->x < f->x0)
                f->x0 = p->x;
            if (!any || p->x > f->x1)
                f->x1 = p->x;
            if (p->hi > f->y1)
                f->y1 = p->hi;
            if (p->lo < f->y0)
                f->y0 = p->lo;
            any = true;
        }
    double xpad = f->x1 > f->x0 ? 0.05 * (f->x1 - f->x0) : 1.0;
    f->x0 -= xpad;
    f->x1 += xpad;
    f->y1 = f->y1 > f->y0 ? f->y1 * 1.1 : f->y0 + 1.0;
}

static bool all_x_whole(const struct plot_series *series, int n_series)
{
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++)
            if (series[s].points[i].x != floor(series[s].points[i].x))
                return false;
    return true;
}

static void x_tick_label(const struct plot_axes *a, double x, double step, char *out, size_t cap)
{
    if (a->x_is_time) {
        time_t t = (time_t)x;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(out, cap, step < 60 ? "%m-%d %H:%M:%S" : "%m-%d %H:%M", &tm);
    } else {
        snprintf(out, cap, "%g", x);
    }
}

int bench_plot_svg(FILE *out, const char *name, const struct plot_axes *a,
                   const struct plot_series *series, int n_series, struct errbuf *e)
{
    struct frame f;
    frame_of(series, n_series, &f);
    fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                 "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            PLOT_W, PLOT_H, PLOT_W, PLOT_H);
    fprintf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(out, "<text class=\"title\" x=\"%.1f\" y=\"28\" font-size=\"16\">", MARGIN_L);
    put_escaped(out, a->title);
    fputs("</text>\n", out);
    double left = MARGIN_L, right = PLOT_W - MARGIN_R, top = MARGIN_T, bottom = PLOT_H - MARGIN_B;
    /* axes, grid and ticks */
    fprintf(out, "<g class=\"axes\" stroke=\"#444\">\n<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n"
                 "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n</g>\n",
            left, bottom, right, bottom, left, top, left, bottom);
    double ystep = nice_step(f.y1 - f.y0, 5);
    fputs("<g class=\"y-ticks\">\n", out);
    /* at most PLOT_MAX_TICKS: a step below the precision of the values would not advance */
    int ticks = 0;
    for (double y = ceil(f.y0 / ystep) * ystep; y <= f.y1 + 1e-9 * ystep && ticks++ < PLOT_MAX_TICKS; y += ystep)
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                     "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                left, py(&f, y), right, py(&f, y), left - 6, py(&f, y) + 4, fabs(y) < 1e-12 ? 0.0 : y);
    fputs("</g>\n<g class=\"x-ticks\">\n", out);
    double xspan = f.x1 - f.x0, xstep = a->x_is_time ? time_step(xspan, 4) : nice_step(xspan, 6);
    /* settings such as threads or workers are whole numbers: no ticks between them */
    if (!a->x_is_time && xstep < 1.0 && all_x_whole(series, n_series))
        xstep = 1.0;
    ticks = 0;
    for (double x = ceil(f.x0 / xstep) * xstep; x <= f.x1 && ticks++ < PLOT_MAX_TICKS; x += xstep) {
        char label[64];
        x_tick_label(a, x, xstep, label, sizeof label);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>"
                     "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                px(&f, x), bottom, px(&f, x), bottom + 5, px(&f, x), bottom + 20, label);
    }
    fputs("</g>\n", out);
    fprintf(out, "<text class=\"x-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
            (left + right) / 2, PLOT_H - 20);
    put_escaped(out, a->x_label);
    fprintf(out, "</text>\n<text class=\"y-label\" transform=\"translate(22 %.1f) rotate(-90)\" "
                 "text-anchor=\"middle\">", (top + bottom) / 2);
    put_escaped(out, a->y_label);
    fputs("</text>\n", out);
    /* the series: a line through the medians, each point with its range of repeats */
    for (int s = 0; s < n_series; s++) {
        const char *color = palette[s % PALETTE_N];
        const struct plot_series *ser = &series[s];
        fprintf(out, "<g class=\"series\" stroke=\"%s\" fill=\"%s\">\n", color, color);
        if (ser->n > 1) {
            fputs("<polyline fill=\"none\" stroke-opacity=\"0.5\" points=\"", out);
            for (int i = 0; i < ser->n; i++)
                fprintf(out, "%s%.1f,%.1f", i ? " " : "", px(&f, ser->points[i].x), py(&f, ser->points[i].y));
            fputs("\"/>\n", out);
        }
        for (int i = 0; i < ser->n; i++) {
            const struct plot_point *p = &ser->points[i];
            double x = px(&f, p->x);
            fprintf(out, "<line class=\"errorbar\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                         "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                         "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                    x, py(&f, p->lo), x, py(&f, p->hi), x - 4, py(&f, p->lo), x + 4, py(&f, p->lo),
                    x - 4, py(&f, p->hi), x + 4, py(&f, p->hi));
            fprintf(out, "<circle class=\"point\" data-run=\"%lld\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\">"
                         "<title>run %lld: %g (%g - %g)</title></circle>\n",
                    (long long)p->run_id, x, py(&f, p->y), (long long)p->run_id, p->y, p->lo, p->hi);
        }
        fputs("</g>\n", out);
        /* its legend entry */
        double ly = top + 10 + 20.0 * s;
        fprintf(out, "<g class=\"legend\"><rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                     "<text x=\"%.1f\" y=\"%.1f\">", right + 20, ly - 10, color, right + 38, ly);
        put_escaped(out, ser->label);
        fputs("</text></g>\n", out);
    }
    fprintf(out, "<text class=\"note\" x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#666\">"
                 "points: medians; bars: min - max of the repeats</text>\n", right + 20,
            top + 20.0 * n_series + 20);
    fputs("</svg>\n", out);
    if (fflush(out) != 0 || ferror(out))
        return err_set(e, "%s: %s", name, strerror(errno));
    return 0;
}
