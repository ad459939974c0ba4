/* natsauth.h - NATS credentials and TLS settings applied to a natsOptions:
 * the one place shared by presenced, presencectl and presence-sim, so that
 * all three accept the same PRESENCE_NATS_* settings the same way. */
#ifndef PD_NATSAUTH_H
#define PD_NATSAUTH_H
#include <nats/nats.h>
#include <stddef.h>
#include <stdint.h>
#include "base/config.h"

/* Applies c's NATS user and password, token, NKey seed file or creds file,
 * and TLS (on when a URL is tls:// or a TLS file is set: CA, client
 * certificate and key) to o. c must have passed pd_config_check_auth.
 * Returns PD_OK, or PD_ECONFIG with a message naming the setting in err
 * (cap bytes, always terminated). Never writes a secret into err. */
pd_status pd_natsauth_apply(natsOptions *o, const pd_config *c, char *err, size_t cap);

/* Derives the public key ("U...", 56 characters and a NUL) of the user
 * NKey seed found in the text of a seed or creds file: the first word that
 * is an encoded user seed ("SU..."). Returns 0, or -1 if there is none or
 * it is damaged (checksum). For pd_natsauth_apply and the tests. */
int pd_natsauth_public_key(const char *text, char pub[57]);

#endif
