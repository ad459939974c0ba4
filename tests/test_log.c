/* test_log.c - log levels, line format, thread safety, the rate limiter,
 * and the two clocks of clock.h (which log.c stamps its lines with).
 *
 * Lines are sent to a tmpfile through a sink of the test's own and read
 * back. */
#include "base/clock.h"
#include "base/log.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* The test's sink: each line appended to the FILE given as ud. */
static void to_file(void *ud, int level, const char *line, size_t len) {
    (void)level;
    fwrite(line, 1, len, ud);
    fflush(ud);
}

/* Read everything written to f so far into buf; returns the line count. */
static int slurp(FILE *f, char *buf, size_t len) {
    fflush(f);
    rewind(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';
    return lines;
}

/* True if s starts with "YYYY-MM-DDTHH:MM:SS.mmmZ ". */
static bool has_stamp(const char *s) {
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return false;
    }
    return true;
}

Test(log, level_parse_and_names) {
    const char *names[] = {"debug", "info", "warn", "error"};
    const int levels[] = {PD_LOG_DEBUG, PD_LOG_INFO, PD_LOG_WARN, PD_LOG_ERROR};
    for (int i = 0; i < 4; i++) {
        int out = -7;
        cr_expect_eq(pd_log_level_parse(names[i], &out), 0);
        cr_expect_eq(out, levels[i]);
        cr_expect_str_eq(pd_log_level_name(levels[i]), names[i]);
    }
    int out = -7;
    cr_expect_eq(pd_log_level_parse("ERROR", &out), 0);
    cr_expect_eq(out, PD_LOG_ERROR);
    out = -7;
    cr_expect_eq(pd_log_level_parse("verbose", &out), -1);
    cr_expect_eq(pd_log_level_parse("", &out), -1);
    cr_expect_eq(pd_log_level_parse("info ", &out), -1);
    cr_expect_eq(pd_log_level_parse(NULL, &out), -1);
    cr_expect_eq(out, -7, "a failed parse leaves *out alone");
    cr_expect_str_eq(pd_log_level_name(99), "?");
}

Test(log, set_level_clamps) {
    cr_expect_eq(pd_log_get_level(), PD_LOG_INFO, "default is info");
    pd_log_set_level(-3);
    cr_expect_eq(pd_log_get_level(), PD_LOG_DEBUG);
    pd_log_set_level(42);
    cr_expect_eq(pd_log_get_level(), PD_LOG_ERROR);
    cr_expect(pd_log_enabled(PD_LOG_ERROR));
    cr_expect_not(pd_log_enabled(PD_LOG_WARN));
}

Test(log, format_time_is_utc_with_milliseconds) {
    char buf[PD_LOG_TIME_LEN];
    pd_log_format_time(1795814337123ULL, buf, sizeof buf);
    cr_expect_str_eq(buf, "2026-11-27T21:18:57.123Z");
    pd_log_format_time(0, buf, sizeof buf);
    cr_expect_str_eq(buf, "1970-01-01T00:00:00.000Z");
    pd_log_format_time(951782400005ULL, buf, sizeof buf);
    cr_expect_str_eq(buf, "2000-02-29T00:00:00.005Z");
}

Test(log, line_format) {
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    pd_log_set_sink(to_file, f);
    pd_log(PD_LOG_INFO, "hello %d %s", 42, "world");
    pd_log(PD_LOG_ERROR, "bad");
    char buf[512];
    cr_assert_eq(slurp(f, buf, sizeof buf), 2, "%s", buf);
    cr_expect(has_stamp(buf), "%s", buf);
    cr_expect_eq(strncmp(buf + 25, "INFO hello 42 world\n", 20), 0, "%s", buf);
    char *second = strchr(buf, '\n') + 1;
    cr_expect(has_stamp(second), "%s", second);
    cr_expect_str_eq(second + 25, "ERROR bad\n");
    pd_log_set_sink(NULL, NULL);
    fclose(f);
}

Test(log, stamp_is_now) {
    FILE *f = tmpfile();
    pd_log_set_sink(to_file, f);
    uint64_t before = pd_now_ms();
    pd_log(PD_LOG_WARN, "x");
    char buf[256], want[PD_LOG_TIME_LEN];
    cr_assert_eq(slurp(f, buf, sizeof buf), 1);
    /* Compare to the second: the line was written within this test. */
    pd_log_format_time(before, want, sizeof want);
    uint64_t after = pd_now_ms();
    char want2[PD_LOG_TIME_LEN];
    pd_log_format_time(after, want2, sizeof want2);
    cr_expect(strncmp(buf, want, 19) == 0 || strncmp(buf, want2, 19) == 0,
              "%s vs %s", buf, want);
    pd_log_set_sink(NULL, NULL);
    fclose(f);
}

Test(log, levels_below_the_threshold_are_dropped) {
    FILE *f = tmpfile();
    pd_log_set_sink(to_file, f);
    pd_log_set_level(PD_LOG_WARN);
    pd_log(PD_LOG_DEBUG, "d");
    pd_log(PD_LOG_INFO, "i");
    pd_log(PD_LOG_WARN, "w");
    pd_log(PD_LOG_ERROR, "e");
    char buf[512];
    cr_expect_eq(slurp(f, buf, sizeof buf), 2, "%s", buf);
    cr_expect(strstr(buf, " WARN w\n") != NULL);
    cr_expect(strstr(buf, " ERROR e\n") != NULL);
    cr_expect(strstr(buf, " INFO ") == NULL);
    pd_log_set_level(PD_LOG_DEBUG);
    pd_log(PD_LOG_DEBUG, "now");
    cr_expect_eq(slurp(f, buf, sizeof buf), 3);
    cr_expect(strstr(buf, " DEBUG now\n") != NULL);
    pd_log_set_sink(NULL, NULL);
    fclose(f);
}

Test(log, control_characters_cannot_forge_lines) {
    FILE *f = tmpfile();
    pd_log_set_sink(to_file, f);
    pd_log(PD_LOG_WARN, "bad id '%s'", "x\n2026-01-01T00:00:00.000Z ERROR fake\r\x1b");
    char buf[512];
    cr_expect_eq(slurp(f, buf, sizeof buf), 1, "%s", buf);
    cr_expect(strstr(buf, "'x?2026-01-01T00:00:00.000Z ERROR fake?\?'\n") != NULL,
              "%s", buf);
    pd_log_set_sink(NULL, NULL);
    fclose(f);
}

Test(log, long_messages_are_truncated_to_one_line) {
    static char big[3 * PD_LOG_LINE_MAX];
    memset(big, 'a', sizeof big - 1);
    FILE *f = tmpfile();
    pd_log_set_sink(to_file, f);
    pd_log(PD_LOG_INFO, "%s", big);
    static char buf[4 * PD_LOG_LINE_MAX];
    cr_expect_eq(slurp(f, buf, sizeof buf), 1);
    size_t n = strlen(buf);
    cr_expect_eq(n, PD_LOG_LINE_MAX - 1);
    cr_expect_str_eq(buf + n - 5, "a...\n");
    pd_log_set_sink(NULL, NULL);
    fclose(f);
}

#define THREADS 4
#define PER_THREAD 500

static void *spam(void *arg) {
    for (int i = 0; i < PER_THREAD; i++)
        pd_log(PD_LOG_INFO, "thread %d line %d %s", (int)(intptr_t)arg, i,
               "padding-padding-padding-padding-padding-padding-padding");
    return NULL;
}

Test(log, concurrent_lines_do_not_interleave) {
    FILE *f = tmpfile();
    pd_log_set_sink(to_file, f);
    pthread_t t[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, spam, (void *)i), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    static char buf[THREADS * PER_THREAD * 160];
    cr_assert_eq(slurp(f, buf, sizeof buf), THREADS * PER_THREAD);
    int good = 0;
    for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        int th, ln;
        char pad[80];
        if (has_stamp(line) &&
            sscanf(line + 25, "INFO thread %d line %d %79s", &th, &ln, pad) == 3 &&
            strcmp(pad, "padding-padding-padding-padding-padding-padding-padding") == 0)
            good++;
    }
    cr_expect_eq(good, THREADS * PER_THREAD);
    pd_log_set_sink(NULL, NULL);
    fclose(f);
}

Test(ratelimit, allows_n_per_window_and_counts_the_rest) {
    pd_ratelimit rl = PD_RATELIMIT_INIT(3, 1000);
    uint32_t sup = 99;
    int allowed = 0;
    for (int i = 0; i < 10; i++) {
        if (pd_ratelimit_allow(&rl, 5000 + (uint64_t)i, &sup)) allowed++;
        if (i > 0) cr_expect_eq(sup, 0, "no report inside a window");
    }
    cr_expect_eq(allowed, 3);
    cr_expect_eq(rl.suppressed, 7);
}

Test(ratelimit, new_window_reports_and_resets) {
    pd_ratelimit rl = PD_RATELIMIT_INIT(2, 1000);
    uint32_t sup = 0;
    for (int i = 0; i < 6; i++) pd_ratelimit_allow(&rl, 10000, &sup);
    cr_expect(pd_ratelimit_allow(&rl, 10999, &sup) == false, "same window");
    cr_expect(pd_ratelimit_allow(&rl, 11000, &sup), "window of 1000 ms ended");
    cr_expect_eq(sup, 5);
    cr_expect(pd_ratelimit_allow(&rl, 11001, &sup));
    cr_expect_eq(sup, 0, "reported once only");
    cr_expect_not(pd_ratelimit_allow(&rl, 11002, &sup));
    cr_expect(pd_ratelimit_allow(&rl, 50000, &sup));
    cr_expect_eq(sup, 1);
    cr_expect(pd_ratelimit_allow(&rl, 90000, &sup));
    cr_expect_eq(sup, 0, "a quiet window reports nothing");
}

Test(ratelimit, zero_initialised_and_edge_cases) {
    pd_ratelimit rl;
    memset(&rl, 0, sizeof rl);
    rl.per_window = 1;
    rl.window_ms = 100;
    cr_expect(pd_ratelimit_allow(&rl, 0, NULL), "first event at time 0");
    cr_expect_not(pd_ratelimit_allow(&rl, 1, NULL), "NULL out is allowed");
    uint32_t sup = 0;
    cr_expect(pd_ratelimit_allow(&rl, 0, &sup) == false);
    rl.window_start_ms = 1000;
    cr_expect(pd_ratelimit_allow(&rl, 500, &sup), "clock went back: new window");
    cr_expect_eq(sup, 2);

    pd_ratelimit none = PD_RATELIMIT_INIT(0, 100);
    cr_expect_not(pd_ratelimit_allow(&none, 1, NULL));
    cr_expect_not(pd_ratelimit_allow(&none, 500, NULL));
    cr_expect_eq(none.suppressed, 1);
}

Test(clock, now_is_wall_time_and_mono_does_not_go_back) {
    uint64_t now = pd_now_ms();
    uint64_t t = (uint64_t)time(NULL) * 1000u;
    cr_expect(now + 2000 >= t && now <= t + 2000, "now=%llu time=%llu",
              (unsigned long long)now, (unsigned long long)t);
    uint64_t a = pd_mono_ms();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t b = pd_mono_ms();
    cr_expect(b >= a + 19 && b < a + 5000, "a=%llu b=%llu",
              (unsigned long long)a, (unsigned long long)b);
}
