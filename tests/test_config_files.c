/* test_config_files.c - node/config_files.c: the file settings (NKey seed,
 * creds, TLS) must name a readable regular file, and the error names the
 * setting as it was given (flag or variable). The loader in common/ checks
 * their form only (tests/test_config.c). */
#include "base/config.h"
#include "config_files.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[256];

static pd_status load_and_check(pd_config *c, char **envp, char **argv) {
    int argc = 0;
    while (argv[argc] != NULL) argc++;
    memset(err, 0, sizeof err);
    pd_status s = pd_config_load(c, argc, argv, envp, err, sizeof err);
    return s != PD_OK ? s : pd_config_check_files(c, argc, argv, err, sizeof err);
}

Test(config_files, unreadable_files_name_the_setting) {
    pd_config c;
    char *e1[] = {"PRESENCE_NODE_ID=n1", "PRESENCE_NATS_CREDS_FILE=/nonexistent/x.creds", NULL};
    char *a0[] = {"presenced", NULL};
    cr_expect_eq(load_and_check(&c, e1, a0), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_NATS_CREDS_FILE: cannot read '/nonexistent/x.creds'") == err,
              "%s", err);
    char *e2[] = {"PRESENCE_NODE_ID=n1", NULL};
    char *a2[] = {"presenced", "--nats-tls-ca", "/tmp", NULL};
    cr_expect_eq(load_and_check(&c, e2, a2), PD_ECONFIG);
    cr_expect(strstr(err, "--nats-tls-ca: '/tmp' is not a regular file") == err, "%s", err);
    char *a3[] = {"presenced", "--nats-tls-ca=/tmp", NULL};
    cr_expect_eq(load_and_check(&c, e2, a3), PD_ECONFIG);
    cr_expect(strstr(err, "--nats-tls-ca: ") == err, "%s", err);
    char *e3[] = {"PRESENCE_NODE_ID=n1", "PRESENCE_NATS_NKEY_SEED_FILE=/nonexistent", NULL};
    cr_expect_eq(load_and_check(&c, e3, a0), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_NATS_NKEY_SEED_FILE:") == err, "%s", err);
}

Test(config_files, readable_files_and_unset_pass) {
    char path[] = "/tmp/pd-cfgf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    char kv[128];
    snprintf(kv, sizeof kv, "PRESENCE_NATS_TLS_CA=%s", path);
    char *envp[] = {"PRESENCE_NODE_ID=n1", kv, NULL};
    char *argv[] = {"presenced", NULL};
    pd_config c;
    cr_expect_eq(load_and_check(&c, envp, argv), PD_OK, "%s", err);
    pd_config_defaults(&c);
    cr_expect_eq(pd_config_check_files(&c, 0, NULL, err, sizeof err), PD_OK, "%s", err);
    cr_expect_eq(pd_config_check_files(&c, 0, NULL, NULL, 0), PD_OK);
    unlink(path);
}

Test(config_files, a_file_removed_after_loading_is_caught) {
    char path[] = "/tmp/pd-cfgf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    pd_config c;
    pd_config_defaults(&c);
    cr_assert_eq(pd_config_set(&c, "PRESENCE_NATS_CREDS_FILE", path, err, sizeof err), PD_OK);
    cr_expect_eq(pd_config_check_files(&c, 0, NULL, err, sizeof err), PD_OK, "%s", err);
    unlink(path);
    cr_expect_eq(pd_config_check_files(&c, 0, NULL, err, sizeof err), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_NATS_CREDS_FILE: cannot read") == err, "%s", err);
}
