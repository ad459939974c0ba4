/* ids.h - identifier rules of docs/protocol.md ("Identifiers") and string slices.
 *
 * user, conn, server and node ids are 1-128 bytes of [A-Za-z0-9._:@=+-] with
 * no leading, trailing or doubled '.', so that an id never becomes a NATS
 * wildcard or an empty subject token. */
#ifndef PD_IDS_H
#define PD_IDS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PD_ID_MAX 128

/* A borrowed, not NUL-terminated byte string (usually pointing into a
 * received message). */
typedef struct {
    const char *p;
    uint32_t n;
} pd_str;

#define PD_STR_LIT(s) ((pd_str){(s), (uint32_t)(sizeof(s) - 1)})
pd_str pd_str_c(const char *s);
bool pd_str_eq(pd_str a, pd_str b);
bool pd_str_eqc(pd_str a, const char *c);

/* True if the n bytes at p form a valid id. */
bool pd_id_valid(const char *p, size_t n);

/* True if the n bytes at p are valid UTF-8 with no C0 control characters
 * and no DEL (labels, custom status text). */
bool pd_text_valid(const char *p, size_t n);

/* 64-bit FNV-1a hash with a final mix; stable across runs and nodes. */
uint64_t pd_hash(const void *p, size_t n);

#endif
