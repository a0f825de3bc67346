/* One completions or chat completions request, served: its job sent to the daemon, its
 * chunks read as they come, answered as one JSON response or as server-sent events (a
 * chunk per token, then the finish reason with usage, then [DONE]). While it waits it
 * watches its client's connection: a client that goes away has its job cancelled at once. */
#ifndef BITNET_DAEMON_HTTP_GENERATE_H
#define BITNET_DAEMON_HTTP_GENERATE_H

#include <microhttpd.h>

#include "daemon/http_openai.h"
#include "daemon/http_server.h"

struct http_generation;

/* Serves req (taken over) on conn: queues a response and returns what the access handler
 * returns; *status is the HTTP status sent, *out the state to pass to
 * http_generation_end when the request completes (NULL when nothing is left to end). */
enum MHD_Result http_generate(struct http_server *s, struct MHD_Connection *conn,
                              struct openai_request *req, double t_arrival_ms, int *status,
                              struct http_generation **out);
/* The request is over (completed, or its connection closed): a job still running is
 * cancelled, the link closed, everything freed. */
void http_generation_end(struct http_generation *g);

/* Queues a JSON body with status; MHD_NO when even that failed. */
enum MHD_Result http_respond_json(struct MHD_Connection *conn, int status, char *json_taken);
enum MHD_Result http_respond_error(struct MHD_Connection *conn, const struct openai_error *err);

#endif
