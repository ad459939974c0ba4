/* logsink.h - where presenced's log lines go: a stdio stream (stderr), one
 * write per line under the stream's lock, so that lines from the loop and
 * from nats.c's threads never interleave. common/base/log.c formats the
 * lines; this is the I/O it leaves to the program. */
#ifndef NODE_LOGSINK_H
#define NODE_LOGSINK_H
#include <stdio.h>

/* Sends every log line to out (borrowed; must outlive logging). */
void node_log_to_stream(FILE *out);

#endif
