/* config_files.h - the file settings of presenced (NKey seed, creds, TLS CA,
 * certificate, key) checked for readability. common/ does no file I/O, so
 * the settings loader (common/base/config.c) checks their form only; the
 * programs that use them (presenced, presencectl, presence-sim) call this
 * after loading. */
#ifndef PD_CONFIG_FILES_H
#define PD_CONFIG_FILES_H
#include <stddef.h>
#include "base/config.h"

/* PD_OK if every file setting of c is "" or the path of a regular file
 * this process can open for reading; else PD_ECONFIG with a message that
 * starts with the setting's name as given (its flag if argv has it, else
 * its variable; argc may be 0 and argv NULL) in err (errlen bytes, always
 * terminated). */
pd_status pd_config_check_files(const pd_config *c, int argc, char **argv, char *err,
                                size_t errlen);

#endif
