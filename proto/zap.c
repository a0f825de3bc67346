#include "proto/zap.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "model/input_file.h"
#include "proto/keys.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_FRAMES 8 /* CURVE requests have 7; more than that is not RFC 27 */
/* an allow-list file is a line per key; a larger one is the wrong file */
#define ALLOW_FILE_MAX_BYTES (4 << 20)

struct zap {
    void *rep;
    void *ctl_main;   /* the owner's end: stop (zap_close), wake (zap_set_keys) */
    void *ctl_thread; /* the thread's end */
    pthread_t thread;
    int threaded;
    /* keys, held and stats are read by the serving thread and changed by zap_reload /
     * zap_set_keys / read by zap_get_stats from the owner's thread */
    pthread_mutex_t lock;
    uint8_t (*keys)[32];
    size_t n_keys;
    int held;         /* no list yet (zap_start_pending): requests wait unanswered */
    struct zap_stats stats;
    zap_observer observer;
    void *observer_arg;
};

/* An allow-list being built: keys decoded from Z85, n of cap. */
struct key_list {
    uint8_t (*k)[32];
    size_t n, cap;
};

/* Appends one Z85 public key of len characters; on failure why says what is wrong with
 * it (the caller adds where it came from). */
static int add_key(struct key_list *l, const char *z85, size_t len, char *why, size_t why_cap)
{
    uint8_t key[32];
    if (len != CURVE_Z85_LEN) {
        snprintf(why, why_cap, "not a Z85 CURVE public key (%zu characters, want 40)", len);
        return -1;
    }
    if (!curve_z85_decode(z85, len, key)) {
        snprintf(why, why_cap, "not a Z85 CURVE public key");
        return -1;
    }
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        void *nk = realloc(l->k, ncap * sizeof *l->k);
        if (!nk) {
            snprintf(why, why_cap, "out of memory");
            return -1;
        }
        l->k = nk;
        l->cap = ncap;
    }
    memcpy(l->k[l->n++], key, 32);
    return 0;
}

/* Appends the keys of one file. */
static int load_key_file(const char *path, struct key_list *l, struct errbuf *e)
{
    FILE *fp = input_fopen(path, ALLOW_FILE_MAX_BYTES, e);
    if (!fp)
        return -1;
    char *line = NULL;
    size_t line_cap = 0;
    unsigned lineno = 0;
    int rc = 0;
    while (getline(&line, &line_cap, fp) >= 0) {
        lineno++;
        if (curve_line_is_comment(line))
            continue;
        const char *p = line + strspn(line, " \t\r\n");
        char why[80];
        if (add_key(l, p, strcspn(p, " \t\r\n"), why, sizeof why)) {
            rc = err_set(e, "%s:%u: %s", path, lineno, why);
            break;
        }
    }
    if (!rc && ferror(fp))
        rc = err_set(e, "%s: read error", path);
    free(line);
    fclose(fp);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.pub file of a directory, in name order so that errors are reproducible. */
static int load_key_dir(const char *dir, struct key_list *l, struct errbuf *e)
{
    DIR *d = opendir(dir);
    if (!d)
        return err_set(e, "%s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n_names = 0, names_cap = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < 5 || strcmp(de->d_name + len - 4, ".pub") != 0)
            continue;
        if (n_names == names_cap) {
            size_t ncap = names_cap ? names_cap * 2 : 16;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn) {
                rc = err_set(e, "%s: out of memory", dir);
                break;
            }
            names = nn;
            names_cap = ncap;
        }
        if (!(names[n_names] = strdup(de->d_name)))
            rc = err_set(e, "%s: out of memory", dir);
        else
            n_names++;
    }
    closedir(d);
    if (n_names)
        qsort(names, n_names, sizeof *names, by_name);
    for (size_t i = 0; i < n_names; i++) {
        if (rc == 0) {
            char path[4096];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path)
                rc = err_set(e, "%s/%s: path too long", dir, names[i]);
            else
                rc = load_key_file(path, l, e);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

static int load_keys(const char *path, struct key_list *out, struct errbuf *e)
{
    struct key_list l = {0};
    struct stat st;
    int rc;
    if (stat(path, &st) != 0)
        rc = err_set(e, "%s: %s", path, strerror(errno));
    else if (S_ISDIR(st.st_mode))
        rc = load_key_dir(path, &l, e);
    else
        rc = load_key_file(path, &l, e);
    if (rc) {
        free(l.k);
        return -1;
    }
    *out = l;
    return 0;
}

/* Puts l in place of the current list, freeing the old one, and ends a hold. */
static void replace_keys(struct zap *z, struct key_list *l)
{
    pthread_mutex_lock(&z->lock);
    void *old = z->keys;
    int was_held = z->held;
    z->keys = l->k;
    z->n_keys = l->n;
    z->held = 0;
    pthread_mutex_unlock(&z->lock);
    free(old);
    /* a held thread watches only its control socket; if the wake-up cannot be sent the
     * thread is gone already (zap_get_stats says why) */
    if (was_held && z->threaded)
        zmq_send(z->ctl_main, "w", 1, ZMQ_DONTWAIT);
}

void *zap_socket(struct zap *z)
{
    return z->rep;
}

static int frame_is(zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

/* Decides one request; fills status code, text and User-Id, and d for the observer. */
static void decide(struct zap *z, zmq_msg_t *f, int nf, int overflow, const char **status,
                   const char **text, char *user, size_t user_cap, struct zap_decision *d,
                   char *key_z85, char *address, size_t address_cap)
{
    user[0] = 0;
    key_z85[0] = 0;
    address[0] = 0;
    memset(d, 0, sizeof *d);
    d->key = key_z85;
    d->address = address;
    d->mechanism = "";
    /* frames: version, request id, domain, address, routing id, mechanism, credentials */
    if (overflow || nf < 6 || !frame_is(&f[0], "1.0")) {
        pthread_mutex_lock(&z->lock);
        z->stats.bad_requests++;
        pthread_mutex_unlock(&z->lock);
        *status = "500";
        *text = "malformed ZAP request";
        d->text = *text;
        return;
    }
    size_t alen = zmq_msg_size(&f[3]) < address_cap ? zmq_msg_size(&f[3]) : address_cap - 1;
    memcpy(address, zmq_msg_data(&f[3]), alen);
    address[alen] = 0;
    int allowed = 0;
    if (frame_is(&f[5], "NULL")) {
        allowed = 1;
        *text = "NULL mechanism";
        d->mechanism = "NULL";
    } else if (frame_is(&f[5], "CURVE") && nf == 7 && zmq_msg_size(&f[6]) == 32) {
        const uint8_t *key = zmq_msg_data(&f[6]);
        pthread_mutex_lock(&z->lock);
        for (size_t i = 0; i < z->n_keys && !allowed; i++)
            allowed = memcmp(z->keys[i], key, 32) == 0;
        pthread_mutex_unlock(&z->lock);
        zmq_z85_encode(key_z85, key, 32);
        if (allowed && user_cap >= 41)
            memcpy(user, key_z85, 41);
        *text = allowed ? "key listed" : "client key not listed";
        d->mechanism = "CURVE";
    } else {
        *text = "mechanism not allowed";
        d->mechanism = frame_is(&f[5], "PLAIN")    ? "PLAIN"
                       : frame_is(&f[5], "GSSAPI") ? "GSSAPI"
                                                   : "?";
    }
    pthread_mutex_lock(&z->lock);
    if (allowed)
        z->stats.allowed++;
    else
        z->stats.refused++;
    pthread_mutex_unlock(&z->lock);
    *status = allowed ? "200" : "400";
    d->allowed = allowed;
    d->text = *text;
}

static int reply(struct zap *z, zmq_msg_t *f, int nf, int overflow, struct errbuf *e)
{
    const char *status, *text;
    char user[48], key[48], address[64];
    struct zap_decision d;
    decide(z, f, nf, overflow, &status, &text, user, sizeof user, &d, key, address,
           sizeof address);
    const void *req_id = nf >= 2 ? zmq_msg_data(&f[1]) : "";
    size_t req_len = nf >= 2 ? zmq_msg_size(&f[1]) : 0;
    if (zmq_send(z->rep, "1.0", 3, ZMQ_SNDMORE) < 0 ||
        zmq_send(z->rep, req_id, req_len, ZMQ_SNDMORE) < 0 ||
        zmq_send(z->rep, status, 3, ZMQ_SNDMORE) < 0 ||
        zmq_send(z->rep, text, strlen(text), ZMQ_SNDMORE) < 0 ||
        zmq_send(z->rep, user, strlen(user), ZMQ_SNDMORE) < 0 ||
        zmq_send(z->rep, "", 0, 0) < 0) /* metadata: none */
        return err_set(e, "zap: reply: %s", zmq_strerror(zmq_errno()));
    /* after the reply: whatever the observer does (logging) never delays a handshake */
    if (z->observer)
        z->observer(z->observer_arg, &d);
    return 0;
}

int zap_serve(struct zap *z, struct errbuf *e)
{
    for (;;) {
        zmq_msg_t f[ZAP_MAX_FRAMES];
        int nf = 0, more = 1, rc = 0, overflow = 0;
        while (more) {
            zmq_msg_t scratch, *m = nf < ZAP_MAX_FRAMES ? &f[nf] : &scratch;
            zmq_msg_init(m);
            /* the rest of a request arrives with its first frame, so nothing here waits */
            if (zmq_msg_recv(m, z->rep, ZMQ_DONTWAIT) < 0) {
                int err = zmq_errno();
                zmq_msg_close(m);
                if (nf == 0 && (err == EAGAIN || err == EINTR))
                    return 0;
                rc = err_set(e, "zap: receive: %s", zmq_strerror(err));
                break;
            }
            more = zmq_msg_more(m);
            if (m == &scratch) {
                zmq_msg_close(m);
                overflow = 1;
            } else
                nf++;
        }
        if (!rc)
            rc = reply(z, f, nf, overflow, e);
        for (int i = 0; i < nf; i++)
            zmq_msg_close(&f[i]);
        if (rc)
            return -1;
    }
}

/* What zap_close (an empty message: stop) and zap_set_keys (one byte: the list came, stop
 * holding) tell the thread. */
static int control_says_stop(void *ctl)
{
    char c;
    int n = zmq_recv(ctl, &c, 1, ZMQ_DONTWAIT);
    return n == 0 || (n < 0 && zmq_errno() != EAGAIN && zmq_errno() != EINTR);
}

static void *serve_thread(void *arg)
{
    struct zap *z = arg;
    zmq_pollitem_t items[2] = {{z->ctl_thread, 0, ZMQ_POLLIN, 0}, {z->rep, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        pthread_mutex_lock(&z->lock);
        int held = z->held;
        pthread_mutex_unlock(&z->lock);
        /* while held, requests stay queued in libzmq, their handshakes waiting */
        if (zmq_poll(items, held ? 1 : 2, -1) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break; /* ETERM: the context is going away */
        }
        if (items[0].revents) {
            if (control_says_stop(z->ctl_thread))
                break;
            continue;
        }
        struct errbuf e;
        if ((items[1].revents & ZMQ_POLLIN) && zap_serve(z, &e)) {
            /* a handler that stopped answering stalls every CURVE handshake: keep the reason
             * where the owner's status reporting (zap_get_stats) will find it */
            pthread_mutex_lock(&z->lock);
            z->stats.failed = 1;
            z->stats.error = e;
            pthread_mutex_unlock(&z->lock);
            break;
        }
    }
    return NULL;
}

static void *new_socket(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    if (s) {
        int zero = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    }
    return s;
}

/* The handler bound in ctx, with the list of keys_path, or none yet (held) for NULL. */
static struct zap *zap_new(void *ctx, const char *keys_path, struct errbuf *e)
{
    struct zap *z = calloc(1, sizeof *z);
    if (!z) {
        err_set(e, "zap: out of memory");
        return NULL;
    }
    pthread_mutex_init(&z->lock, NULL);
    struct key_list l = {0};
    if (keys_path && load_keys(keys_path, &l, e)) {
        err_prefix(e, "zap");
        zap_close(z);
        return NULL;
    }
    z->keys = l.k;
    z->n_keys = l.n;
    z->held = !keys_path;
    z->rep = new_socket(ctx, ZMQ_REP);
    if (!z->rep || zmq_bind(z->rep, ZAP_ENDPOINT) != 0) {
        err_set(e, "zap: bind %s: %s", ZAP_ENDPOINT, zmq_strerror(zmq_errno()));
        zap_close(z);
        return NULL;
    }
    return z;
}

struct zap *zap_open(void *ctx, const char *keys_path, struct errbuf *e)
{
    if (!keys_path) {
        err_set(e, "zap: no key file given");
        return NULL;
    }
    return zap_new(ctx, keys_path, e);
}

/* Starts the serving thread of z; frees z on failure. */
static struct zap *start_thread(void *ctx, struct zap *z, struct errbuf *e)
{
    if (!z)
        return NULL;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://bitnet-zap-ctl-%p", (void *)z);
    z->ctl_main = new_socket(ctx, ZMQ_PAIR);
    z->ctl_thread = new_socket(ctx, ZMQ_PAIR);
    if (!z->ctl_main || !z->ctl_thread || zmq_bind(z->ctl_main, ep) != 0 ||
        zmq_connect(z->ctl_thread, ep) != 0) {
        err_set(e, "zap: control socket: %s", zmq_strerror(zmq_errno()));
        zap_close(z);
        return NULL;
    }
    /* the sockets move to the thread; pthread_create is the memory barrier ZeroMQ asks for */
    int rc = pthread_create(&z->thread, NULL, serve_thread, z);
    if (rc) {
        err_set(e, "zap: thread: %s", strerror(rc));
        zap_close(z);
        return NULL;
    }
    z->threaded = 1;
    return z;
}

struct zap *zap_start(void *ctx, const char *keys_path, struct errbuf *e)
{
    return start_thread(ctx, zap_open(ctx, keys_path, e), e);
}

struct zap *zap_start_pending(void *ctx, struct errbuf *e)
{
    return start_thread(ctx, zap_new(ctx, NULL, e), e);
}

int zap_reload(struct zap *z, const char *keys_path, struct errbuf *e)
{
    struct key_list l;
    if (load_keys(keys_path, &l, e))
        return err_prefix(e, "zap reload");
    replace_keys(z, &l);
    return 0;
}

int zap_set_keys(struct zap *z, const char *const *keys, size_t n, struct errbuf *e)
{
    struct key_list l = {0};
    for (size_t i = 0; i < n; i++) {
        char why[80];
        const char *k = keys[i] ? keys[i] : "";
        if (add_key(&l, k, strlen(k), why, sizeof why)) {
            free(l.k);
            return err_set(e, "zap: key %zu '%.48s': %s", i + 1, k, why);
        }
    }
    replace_keys(z, &l);
    return 0;
}

void zap_set_observer(struct zap *z, zap_observer fn, void *arg)
{
    z->observer = fn;
    z->observer_arg = arg;
}

size_t zap_n_keys(struct zap *z)
{
    pthread_mutex_lock(&z->lock);
    size_t n = z->n_keys;
    pthread_mutex_unlock(&z->lock);
    return n;
}

void zap_get_stats(struct zap *z, struct zap_stats *out)
{
    pthread_mutex_lock(&z->lock);
    *out = z->stats;
    pthread_mutex_unlock(&z->lock);
}

void zap_close(struct zap *z)
{
    if (!z)
        return;
    if (z->threaded) {
        /* if the signal cannot be sent the thread is already gone (ETERM) */
        zmq_send(z->ctl_main, "", 0, 0);
        pthread_join(z->thread, NULL);
    }
    if (z->ctl_thread)
        zmq_close(z->ctl_thread);
    if (z->ctl_main)
        zmq_close(z->ctl_main);
    if (z->rep)
        zmq_close(z->rep);
    pthread_mutex_destroy(&z->lock);
    free(z->keys);
    free(z);
}
