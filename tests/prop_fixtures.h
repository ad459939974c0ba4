/* prop_fixtures.h - seeded randomness for the property tests
 * (test_registers.c, test_repl.c).
 *
 * Each run takes a base seed: PD_SEED from the environment if set, else one
 * made from the time and pid (once, for all the run's tests), and prints
 * it, so that a failure can be replayed with PD_SEED=<seed>. Each case derives its own seed from the base
 * seed, the test's name and the case number, so the cases of one test do not
 * depend on how many ran before them or in which process.
 *
 * Each tests/test_*.c is built alone as its own executable, so the helpers
 * are static inline and the header is included once per binary. */
#ifndef PD_TESTS_PROP_FIXTURES_H
#define PD_TESTS_PROP_FIXTURES_H

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* An assertion for hot loops: Criterion reports every cr_assert to its
 * runner, passing ones included, which costs more than the case itself;
 * this one reports only a failure. */
#define REQUIRE(cond, ...)                                                   \
    do {                                                                      \
        if (!(cond)) cr_assert_fail(__VA_ARGS__);                            \
    } while (0)

typedef struct {
    uint64_t s;
} rng;

static inline uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rng_next(rng *r) { return splitmix(&r->s); }

/* Uniform in [0, n); n > 0. */
static inline uint32_t rng_below(rng *r, uint32_t n) {
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* True with probability pct percent. */
static inline bool rng_pct(rng *r, uint32_t pct) { return rng_below(r, 100) < pct; }

/* The run's base seed (PD_SEED or time and pid), printed once per process. */
static inline uint64_t base_seed(void) {
    static uint64_t seed;
    static bool have;
    if (have) return seed;
    const char *env = getenv("PD_SEED");
    if (env && *env) {
        seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^
                     (uint64_t)getpid() << 32;
        seed = splitmix(&x) & 0xffffffffffffULL; /* short enough to type */
    }
    have = true;
    return seed;
}

/* One seed for the whole run: Criterion runs each test in its own worker
 * process, so the runner picks the seed before the workers start and hands
 * it to them through the environment. */
ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, base_seed());
    setenv("PD_SEED", buf, 0);
}

/* The seed of case i of the test named name. */
static inline uint64_t case_seed(const char *name, uint64_t i) {
    uint64_t x = base_seed();
    for (const char *p = name; *p; p++) x = (x ^ (uint8_t)*p) * 0x100000001b3ULL;
    x ^= i * 0xd6e8feb86659fd93ULL;
    return splitmix(&x);
}

/* Prints the base seed for the test named name (the line to copy to replay). */
static inline void announce_seed(const char *name, uint64_t cases) {
    fprintf(stderr, "%s: %" PRIu64 " cases, PD_SEED=%" PRIu64 "\n", name, cases, base_seed());
}

/* Shuffles n ints (Fisher-Yates). */
static inline void shuffle(rng *r, int *v, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint32_t)i + 1);
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

#endif /* PD_TESTS_PROP_FIXTURES_H */
