/* status.h - the one status type of presenced.
 *
 * Every fallible function returns a pd_status. The protocol error codes of
 * docs/protocol.md section 7 are statuses too, so a decode error travels from the
 * codec to the reply without translation tables in between. */
#ifndef PD_STATUS_H
#define PD_STATUS_H

typedef enum {
    PD_OK = 0,
    PD_EBADMSGPACK,   /* not MessagePack, truncated, trailing bytes, not a map */
    PD_EBADTYPE,      /* unknown event `type` */
    PD_EMISSING,      /* a required field is absent */
    PD_EBADID,        /* an identifier breaks the id rules */
    PD_ETOOLARGE,     /* a size limit is exceeded */
    PD_EBADVALUE,     /* a field has the wrong type or an out-of-range value */
    PD_EUNKNOWNCONN,  /* the connection is not known to this node */
    PD_EINTERNAL,     /* a bug or an unexpected failure */
    PD_ENOMEM,        /* allocation failed (reported as `internal`) */
    PD_EIO,           /* a network or file operation failed (`internal`) */
    PD_ECONFIG,       /* a setting is invalid */
    PD_EPARTIAL,      /* a batch or sync applied in part: see its `failed` list */
    PD_STATUS_COUNT
} pd_status;

/* Human-readable name of a status, for logs. Never NULL. */
const char *pd_status_str(pd_status s);

/* The wire error code of docs/protocol.md section 7 ("bad_msgpack", ...).
 * Statuses with no code of their own map to "internal". */
const char *pd_status_code(pd_status s);

/* An error with its detail: the status and a message for a reply or a log.
 * Filled by whoever refuses something (decoders, the model, the replica). */
typedef struct {
    pd_status code;
    char msg[128];
} pd_err;

/* Sets e's code and formats its message; e may be NULL (then nothing). */
void pd_err_set(pd_err *e, pd_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
