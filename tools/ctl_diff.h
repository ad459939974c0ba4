/* ctl_diff.h - `presencectl cluster --diff`: each node's answers compared
 * through the per-node query subjects (see ctl_diff.c). */
#ifndef PD_CTL_DIFF_H
#define PD_CTL_DIFF_H
#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Prints a digest per node, then the users whose answers differ; returns 0
 * when every node that is up gives the same answers, 1 when they differ
 * or a node does not answer. */
int ctl_cluster_diff(natsConnection *nc, const char *prefix, int64_t timeout_ms, bool json,
                     FILE *out);

#endif
