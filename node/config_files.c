/* config_files.c - readability of the file settings (see config_files.h).
 * Open, then fstat the open file: a path swapped between a stat and the
 * open cannot pass as the regular file it was. */
#include "config_files.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pd_status check_one(const char *name, const char *path, char *err, size_t errlen) {
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot read '%.200s': %s", name, path, strerror(errno));
        return PD_ECONFIG;
    }
    int rc = fstat(fd, &st);
    close(fd);
    if (rc != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: '%.200s' is not a regular file", name, path);
        return PD_ECONFIG;
    }
    return PD_OK;
}

pd_status pd_config_check_files(const pd_config *c, int argc, char **argv, char *err,
                                size_t errlen) {
    pd_config_file files[16];
    char buf[64], scratch[8];
    if (err == NULL || errlen == 0) err = scratch, errlen = sizeof scratch;
    err[0] = '\0';
    size_t n = pd_config_file_settings(c, files, sizeof files / sizeof files[0]);
    for (size_t i = 0; i < n; i++) {
        if (files[i].path[0] == '\0') continue;
        const char *name = pd_config_source_name(files[i].env, argc, argv, buf, sizeof buf);
        if (check_one(name, files[i].path, err, errlen) != PD_OK) return PD_ECONFIG;
    }
    return PD_OK;
}
