/* ptypes.h - the small enums of presence shared by the model and the codec:
 * chosen status, public status and device state, with their wire names. */
#ifndef PD_PTYPES_H
#define PD_PTYPES_H
#include <stdbool.h>
#include "base/ids.h"

/* The user's chosen mode (event `status`). */
typedef enum { PD_CHOSEN_AUTO, PD_CHOSEN_AWAY, PD_CHOSEN_BUSY, PD_CHOSEN_INVISIBLE } pd_chosen;

/* A presence as a viewer sees it. INVISIBLE is only ever shown to the user. */
typedef enum { PD_PUB_OFFLINE, PD_PUB_ONLINE, PD_PUB_AWAY, PD_PUB_BUSY, PD_PUB_INVISIBLE } pd_public;

typedef enum { PD_DEV_ACTIVE, PD_DEV_IDLE } pd_devstate;

const char *pd_chosen_name(pd_chosen c);
const char *pd_public_name(pd_public p);
const char *pd_devstate_name(pd_devstate s);
/* Parse wire names; false if the name is not one of them. */
bool pd_chosen_parse(pd_str s, pd_chosen *out);
bool pd_public_parse(pd_str s, pd_public *out);
bool pd_devstate_parse(pd_str s, pd_devstate *out);

#endif
