/* ptypes.c - wire names of the presence enums. */
#include "wire/ptypes.h"

static const char *const chosen_names[] = {"auto", "away", "busy", "invisible"};
static const char *const public_names[] = {"offline", "online", "away", "busy", "invisible"};
static const char *const devstate_names[] = {"active", "idle"};

#define NAME_OF(tab, v) ((unsigned)(v) < sizeof(tab) / sizeof(tab[0]) ? tab[v] : "?")

const char *pd_chosen_name(pd_chosen c) { return NAME_OF(chosen_names, c); }
const char *pd_public_name(pd_public p) { return NAME_OF(public_names, p); }
const char *pd_devstate_name(pd_devstate s) { return NAME_OF(devstate_names, s); }

static bool parse(pd_str s, const char *const *tab, int n, int *out) {
    for (int i = 0; i < n; i++) {
        if (pd_str_eqc(s, tab[i])) { *out = i; return true; }
    }
    return false;
}

bool pd_chosen_parse(pd_str s, pd_chosen *out) {
    int v;
    if (!parse(s, chosen_names, 4, &v)) return false;
    *out = (pd_chosen)v;
    return true;
}

bool pd_public_parse(pd_str s, pd_public *out) {
    int v;
    if (!parse(s, public_names, 5, &v)) return false;
    *out = (pd_public)v;
    return true;
}

bool pd_devstate_parse(pd_str s, pd_devstate *out) {
    int v;
    if (!parse(s, devstate_names, 2, &v)) return false;
    *out = (pd_devstate)v;
    return true;
}
