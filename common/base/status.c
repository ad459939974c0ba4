/* status.c - names and wire codes of pd_status values. */
#include "base/status.h"
#include <stdarg.h>
#include <stdio.h>

/* CHECKLIST: new status? Add it to both tables and to tests/test_status.c. */
static const char *const names[PD_STATUS_COUNT] = {
    [PD_OK] = "ok",
    [PD_EBADMSGPACK] = "bad msgpack",
    [PD_EBADTYPE] = "bad type",
    [PD_EMISSING] = "missing field",
    [PD_EBADID] = "bad id",
    [PD_ETOOLARGE] = "too large",
    [PD_EBADVALUE] = "bad value",
    [PD_EUNKNOWNCONN] = "unknown conn",
    [PD_EINTERNAL] = "internal error",
    [PD_ENOMEM] = "out of memory",
    [PD_EIO] = "i/o error",
    [PD_ECONFIG] = "bad configuration",
    [PD_EPARTIAL] = "applied in part",
};

static const char *const codes[PD_STATUS_COUNT] = {
    [PD_OK] = "ok",
    [PD_EBADMSGPACK] = "bad_msgpack",
    [PD_EBADTYPE] = "bad_type",
    [PD_EMISSING] = "missing_field",
    [PD_EBADID] = "bad_id",
    [PD_ETOOLARGE] = "too_large",
    [PD_EBADVALUE] = "bad_value",
    [PD_EUNKNOWNCONN] = "unknown_conn",
    [PD_EINTERNAL] = "internal",
    [PD_ENOMEM] = "internal",
    [PD_EIO] = "internal",
    [PD_ECONFIG] = "internal",
    [PD_EPARTIAL] = "partial",
};

const char *pd_status_str(pd_status s) {
    if ((unsigned)s >= PD_STATUS_COUNT) return "unknown status";
    return names[s];
}

const char *pd_status_code(pd_status s) {
    if ((unsigned)s >= PD_STATUS_COUNT) return "internal";
    return codes[s];
}

void pd_err_set(pd_err *e, pd_status code, const char *fmt, ...) {
    if (e == NULL) return;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}
