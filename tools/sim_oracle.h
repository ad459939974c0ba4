/* sim_oracle.h - presence-sim's truth: which connections are live, for
 * which user, on which socket server, and the seeded random numbers that
 * choose what happens next.
 *
 * Pure bookkeeping, no NATS: the simulator asks the oracle before it sends
 * an event (it never names a connection the oracle does not hold) and
 * updates it as the event leaves, so at any moment the oracle is what the
 * node must converge to once every sent event is applied. */
#ifndef PD_SIM_ORACLE_H
#define PD_SIM_ORACLE_H
#include <stdbool.h>
#include <stdint.h>
#include "base/status.h"

#define SIM_CONN_ID_MAX 24 /* "c" + a 64-bit serial + NUL */

/* One live connection. Its wire id is "c<serial>", unique within a run. */
typedef struct {
    uint64_t serial;
    uint32_t user;   /* index: user id is <user-prefix><user> */
    uint16_t server; /* index: server id is <server-prefix>-<server> */
    uint8_t slot;    /* device slot of the user, 0 .. maxdev-1 */
} sim_conn;

typedef struct {
    sim_conn *conns;      /* live connections, dense (removal swaps the last in) */
    uint32_t n, cap;
    int32_t *slots;       /* nusers * maxdev: index into conns, or -1 */
    uint8_t *ndev;        /* live devices per user */
    uint32_t *server_n;   /* live connections per server */
    uint32_t nusers, maxdev, nservers;
    uint32_t users_with_devices;
    uint64_t next_serial;
} sim_oracle;

/* Sizes the oracle for a run; PD_ENOMEM if it cannot. */
pd_status sim_oracle_init(sim_oracle *o, uint32_t nusers, uint32_t maxdev, uint32_t nservers);
void sim_oracle_free(sim_oracle *o);

/* The first free device slot of user, or -1 if the user has maxdev devices. */
int sim_oracle_free_slot(const sim_oracle *o, uint32_t user);
/* Records a new connection of user on server in slot (which must be free);
 * returns its index in o->conns, or -1 if memory runs out. */
int32_t sim_oracle_add(sim_oracle *o, uint32_t user, uint32_t slot, uint16_t server);
/* Forgets the connection at index i; the last one moves into i. */
void sim_oracle_remove(sim_oracle *o, uint32_t i);
/* Forgets every connection of server; returns how many there were. */
uint32_t sim_oracle_remove_server(sim_oracle *o, uint16_t server);
/* Index of some live connection of user, or -1. */
int32_t sim_oracle_conn_of(const sim_oracle *o, uint32_t user);

/* Writes the wire id of c ("c<serial>") into buf. */
void sim_conn_id(const sim_conn *c, char buf[SIM_CONN_ID_MAX]);
/* The device label of a slot: web, mobile, desktop, then again. */
const char *sim_slot_label(uint32_t slot);

/* ---- random numbers (splitmix64: tiny, seedable, good enough) ---------- */

uint64_t sim_rand(uint64_t *state);
/* Uniform in [0, n); n must be > 0. */
uint32_t sim_rand_below(uint64_t *state, uint32_t n);
/* Uniform in [0, 1). */
double sim_rand_unit(uint64_t *state);

#endif
