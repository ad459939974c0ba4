/* ctl_json.h - presencectl's output helpers: any MessagePack reply as one
 * line of JSON, and the cluster reply as a table. */
#ifndef PD_CTL_JSON_H
#define PD_CTL_JSON_H
#include <stddef.h>
#include <stdio.h>

/* Prints buf (one MessagePack value) as JSON and a newline; -1 if malformed. */
int ctl_json_print(FILE *out, const void *buf, size_t len);
/* Prints a P.query.cluster reply as a table; -1 if malformed. */
int ctl_print_cluster(FILE *out, const void *buf, size_t len);

#endif
