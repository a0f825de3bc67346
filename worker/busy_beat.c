#include "worker/busy_beat.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "model/clock.h"
#include "proto/wire.h"

static void send_beat(struct busy_beat *b)
{
    Bitnet__Heartbeat hb = BITNET__HEARTBEAT__INIT;
    hb.role = BITNET__ROLE__ROLE_WORKER;
    hb.sender = (char *)b->sender;
    hb.monotonic_ms = (uint64_t)clock_ms();
    hb.busy_step_id = b->step_id;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    struct errbuf e;
    /* never waits: a daemon that is not reading learns nothing from a blocked thread */
    if (wire_send(b->sock, &env, 0, &e) == WIRE_OK)
        b->sent++;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *run(void *arg)
{
    struct busy_beat *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        if (!b->busy) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        /* the loop sent a heartbeat right before lending the socket: one interval first */
        uint64_t step = b->step_id;
        struct timespec ts;
        deadline_in(&ts, b->interval_ms);
        int rc = 0;
        while (!b->stop && b->busy && b->step_id == step && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        if (rc == ETIMEDOUT && b->busy && !b->stop)
            send_beat(b);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int busy_beat_start(struct busy_beat *b, void *sock, const char *sender, int interval_ms,
                    struct errbuf *e)
{
    memset(b, 0, sizeof *b);
    b->sock = sock;
    b->sender = sender;
    b->interval_ms = interval_ms > 0 ? interval_ms : 200;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_mutex_init(&b->mu, NULL);
    if (rc == 0)
        rc = pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0)
        rc = pthread_create(&b->thread, NULL, run, b);
    if (rc != 0)
        return err_set(e, "heartbeat thread: %s", strerror(rc));
    b->started = true;
    return 0;
}

void busy_beat_begin(struct busy_beat *b, uint64_t step_id)
{
    if (!b->started)
        return;
    pthread_mutex_lock(&b->mu);
    b->busy = true;
    b->step_id = step_id;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void busy_beat_end(struct busy_beat *b)
{
    if (!b->started)
        return;
    /* the thread sends only while holding the lock, so once we hold it, it is not */
    pthread_mutex_lock(&b->mu);
    b->busy = false;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void busy_beat_stop(struct busy_beat *b)
{
    if (!b->started)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    b->busy = false;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    b->started = false;
}
