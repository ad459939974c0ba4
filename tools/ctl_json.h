/* ctl_json.h - presencectl's output helpers: any MessagePack reply as one
 * line of JSON, and the cluster reply as a table. */
#ifndef PD_CTL_JSON_H
#define PD_CTL_JSON_H
#include <stddef.h>
#include <stdio.h>
#include "wire/codec.h"

/* Prints buf (one MessagePack value) as JSON and a newline; -1 if malformed.
 * A "last_heartbeat" (the wire's age in milliseconds) is printed as the
 * time it stands for ("2026-01-02T03:04:05.678Z"; null if never heard). */
int ctl_json_print(FILE *out, const void *buf, size_t len);
/* Prints the C string s as a JSON string (quoted, escaped). */
void ctl_json_cstr(FILE *out, const char *s);
/* Writes s as a JSON string into dst (cap bytes, at least 6 * s.n + 3);
 * returns the bytes written (no NUL). */
size_t ctl_json_escape(char *dst, size_t cap, pd_str s);
/* Prints a P.query.cluster reply as a table; -1 if malformed. */
int ctl_print_cluster(FILE *out, const void *buf, size_t len);

#endif
