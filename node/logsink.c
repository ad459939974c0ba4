/* logsink.c - the stdio sink of the log (see logsink.h). stdio's stream
 * lock is the only mutex, and it is the one other writers to the same
 * stream also take. */
#include "logsink.h"
#include "base/log.h"

static void to_stream(void *ud, int level, const char *line, size_t len) {
    (void)level;
    FILE *out = ud;
    flockfile(out);
    fwrite(line, 1, len, out);
    fflush(out);
    funlockfile(out);
}

void node_log_to_stream(FILE *out) {
    pd_log_set_sink(to_stream, out);
}
