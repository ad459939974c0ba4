/* codec_util.h - what every decoder and encoder of common/wire (codec.c,
 * codec_query.c, codec_repl.c) and the snapshot (sync/snapshot.c) share,
 * and the one style they follow:
 *
 * - A decoder, and each function that reads one field of a message,
 *   returns pd_status and fills pd_err with why (naming the field).
 * - Readers of one value return bool and leave the reason in the
 *   mp_reader, as mpread.h does (sticky: the first failure wins): the
 *   pd_rd_* below add the checks the messages share. pd_rd_err turns a
 *   reader's failure into the caller's pd_status + pd_err.
 * - Required fields are bits of an enum named after them: a decoder ORs
 *   each field it reads into `seen`, and pd_fields_missing names the first
 *   required field that is not there.
 *
 * CHECKLIST: a helper here changes its error code or message? The refusal
 * cases of tests/test_codec.c, test_codec_repl.c and test_snapshot.c check
 * both. */
#ifndef PD_CODEC_UTIL_H
#define PD_CODEC_UTIL_H
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "base/ids.h"
#include "base/status.h"
#include "wire/mpread.h"

/* ---- reading one value: bool, the reason stays in r ---- */

/* A non-negative integer (PD_EBADVALUE "negative number" otherwise). */
bool pd_rd_u64(mp_reader *r, uint64_t *v);
/* A non-negative integer at most max (PD_EBADVALUE "value out of range"). */
bool pd_rd_max(mp_reader *r, uint64_t max, uint64_t *v);
/* A string that is a valid id (PD_EBADID "bad id" otherwise). */
bool pd_rd_id(mp_reader *r, pd_str *s);
/* A map key: a string. */
bool pd_read_key(mp_reader *r, pd_str *key);

/* Validates one element of an array (see pd_rd_array). */
typedef bool (*pd_rd_elem_fn)(mp_reader *r, void *ud);
/* An array validated in place, element by element with fn, nothing
 * allocated: its encoded bytes go to *raw and its length to *n, and, if
 * at is not NULL, a reader positioned on its first element to *at. An
 * element's failure is r's, with the element's reason. */
bool pd_rd_array(mp_reader *r, pd_str *raw, uint32_t *n, pd_rd_elem_fn fn, void *ud,
                 mp_reader *at);

/* ---- into pd_status + pd_err ---- */

/* r's failure as a status, its reason in err ("bad field" if it has none). */
pd_status pd_rd_err(const mp_reader *r, pd_err *err);
/* r failed reading `field`: a value of another kind says "field 'f' must
 * be <kind>"; anything else (truncated, malformed) is r's own reason. */
pd_status pd_rd_field_err(const mp_reader *r, pd_err *err, const char *field, const char *kind);

/* PD_OK if seen holds every bit of required; else PD_EMISSING, and err
 * names the first missing field (names[b] is the field of bit b):
 * "<what> lacks field 'f'", or "missing field 'f'" when what is NULL. */
pd_status pd_fields_missing(unsigned seen, unsigned required, const char *const names[],
                            size_t nnames, const char *what, pd_err *err);

/* ---- packing ---- */

void pd_pack_str(msgpack_packer *pk, pd_str s);
void pd_pack_cstr(msgpack_packer *pk, const char *s);
void pd_pack_kv_str(msgpack_packer *pk, const char *k, pd_str v);
void pd_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v);
void pd_pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v);
void pd_pack_kv_bool(msgpack_packer *pk, const char *k, bool v);

#endif
