/* mpread.h - a bounds-checked, allocation-free MessagePack reader.
 *
 * msgpack-c's unpacker allocates for a declared container size before it
 * reads the elements (5 bytes `dd ff ff ff ff` ask for ~96 GiB), so input
 * from the network is read with this cursor instead: every length is checked
 * against the bytes that remain before anything is trusted, strings are
 * returned as slices into the input, and nothing is allocated. Errors are
 * sticky: after the first failure every call fails and `why` tells what. */
#ifndef PD_MPREAD_H
#define PD_MPREAD_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "base/ids.h"
#include "base/status.h"

#define MPR_MAX_DEPTH 32

typedef enum {
    MPR_NIL, MPR_BOOL, MPR_INT, MPR_FLOAT, MPR_STR, MPR_BIN,
    MPR_ARRAY, MPR_MAP, MPR_EXT, MPR_INVALID, MPR_END
} mpr_kind;

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    pd_status err;
    char why[96];
} mp_reader;

void mpr_init(mp_reader *r, const void *buf, size_t len);
size_t mpr_remaining(const mp_reader *r);

/* Kind of the next value, without consuming it (MPR_END at end of input). */
mpr_kind mpr_peek(const mp_reader *r);

/* Each reader consumes one value of its kind or fails with PD_EBADMSGPACK
 * (malformed or truncated) or PD_EBADVALUE (well-formed, other kind). */
bool mpr_map(mp_reader *r, uint32_t *count);
bool mpr_array(mp_reader *r, uint32_t *count);
bool mpr_str(mp_reader *r, pd_str *out);
bool mpr_int(mp_reader *r, int64_t *out);
bool mpr_bool(mp_reader *r, bool *out);
bool mpr_nil(mp_reader *r);
/* Skips one whole value of any kind, nesting at most MPR_MAX_DEPTH deep. */
bool mpr_skip(mp_reader *r);
/* Skips one value and returns the bytes it spans. */
bool mpr_raw(mp_reader *r, pd_str *out);

/* Records an error (first one wins); returns false for use in returns. */
bool mpr_fail(mp_reader *r, pd_status s, const char *why);

#endif
