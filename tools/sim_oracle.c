/* sim_oracle.c - the live connections of presence-sim (see sim_oracle.h).
 *
 * Connections live in one dense array so that "a random live connection"
 * is one random index; each user has maxdev slots that point into it, and
 * a removal moves the last connection into the hole and repoints its slot.
 * Every operation is O(1) except remove_server, which walks the array. */
#include "sim_oracle.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "base/alloc.h"

pd_status sim_oracle_init(sim_oracle *o, uint32_t nusers, uint32_t maxdev, uint32_t nservers) {
    memset(o, 0, sizeof *o);
    o->nusers = nusers;
    o->maxdev = maxdev;
    o->nservers = nservers;
    o->next_serial = 1;
    o->slots = pd_malloc((size_t)nusers * maxdev * sizeof *o->slots);
    o->ndev = pd_calloc(nusers, sizeof *o->ndev);
    o->server_n = pd_calloc(nservers, sizeof *o->server_n);
    if (o->slots == NULL || o->ndev == NULL || o->server_n == NULL) {
        sim_oracle_free(o);
        return PD_ENOMEM;
    }
    for (size_t i = 0; i < (size_t)nusers * maxdev; i++) o->slots[i] = -1;
    return PD_OK;
}

void sim_oracle_free(sim_oracle *o) {
    pd_free(o->conns);
    pd_free(o->slots);
    pd_free(o->ndev);
    pd_free(o->server_n);
    memset(o, 0, sizeof *o);
}

int sim_oracle_free_slot(const sim_oracle *o, uint32_t user) {
    const int32_t *s = o->slots + (size_t)user * o->maxdev;
    if (o->ndev[user] >= o->maxdev) return -1;
    for (uint32_t k = 0; k < o->maxdev; k++) {
        if (s[k] < 0) return (int)k;
    }
    return -1;
}

int32_t sim_oracle_add(sim_oracle *o, uint32_t user, uint32_t slot, uint16_t server) {
    if (o->n == o->cap) {
        uint32_t cap = o->cap ? o->cap * 2 : 1024;
        sim_conn *c = pd_realloc(o->conns, (size_t)cap * sizeof *c);
        if (c == NULL) return -1;
        o->conns = c;
        o->cap = cap;
    }
    int32_t i = (int32_t)o->n++;
    o->conns[i] = (sim_conn){o->next_serial++, user, server, (uint8_t)slot};
    o->slots[(size_t)user * o->maxdev + slot] = i;
    if (o->ndev[user]++ == 0) o->users_with_devices++;
    o->server_n[server]++;
    return i;
}

void sim_oracle_remove(sim_oracle *o, uint32_t i) {
    sim_conn *c = &o->conns[i];
    o->slots[(size_t)c->user * o->maxdev + c->slot] = -1;
    if (--o->ndev[c->user] == 0) o->users_with_devices--;
    o->server_n[c->server]--;
    uint32_t last = --o->n;
    if (i != last) {
        o->conns[i] = o->conns[last];
        c = &o->conns[i];
        o->slots[(size_t)c->user * o->maxdev + c->slot] = (int32_t)i;
    }
}

uint32_t sim_oracle_remove_server(sim_oracle *o, uint16_t server) {
    uint32_t removed = 0;
    for (uint32_t i = 0; i < o->n;) {
        if (o->conns[i].server == server) {
            sim_oracle_remove(o, i); /* the last one moved into i: look again */
            removed++;
        } else {
            i++;
        }
    }
    return removed;
}

int32_t sim_oracle_conn_of(const sim_oracle *o, uint32_t user) {
    const int32_t *s = o->slots + (size_t)user * o->maxdev;
    for (uint32_t k = 0; k < o->maxdev; k++) {
        if (s[k] >= 0) return s[k];
    }
    return -1;
}

void sim_conn_id(const sim_conn *c, char buf[SIM_CONN_ID_MAX]) {
    snprintf(buf, SIM_CONN_ID_MAX, "c%" PRIu64, c->serial);
}

const char *sim_slot_label(uint32_t slot) {
    static const char *const labels[] = {"web", "mobile", "desktop"};
    return labels[slot % 3];
}

uint64_t sim_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint32_t sim_rand_below(uint64_t *state, uint32_t n) {
    /* Multiply-shift: unbiased enough for a load generator, no division. */
    return (uint32_t)(((sim_rand(state) >> 32) * (uint64_t)n) >> 32);
}

double sim_rand_unit(uint64_t *state) {
    return (double)(sim_rand(state) >> 11) * (1.0 / 9007199254740992.0);
}
