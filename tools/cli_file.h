/* cli_file.h - the tools' sink for the shared parser's texts (base/cli.h):
 * help, man pages and completions written to a FILE *. */
#ifndef PD_CLI_FILE_H
#define PD_CLI_FILE_H
#include <stdio.h>
#include "base/cli.h"

static inline void pd_cli_file_write(void *ud, const char *text, size_t n) {
    fwrite(text, 1, n, (FILE *)ud);
}

/* A pd_cli_out that writes to f (valid in the enclosing block). */
#define PD_CLI_FILE(f) (&(pd_cli_out){pd_cli_file_write, (f)})

#endif
