/* natsauth.c - PRESENCE_NATS_* credentials and TLS onto nats.c's options.
 *
 * nats.c does the work (it signs the server's nonce with the seed itself
 * and wipes it after use); what it lacks is a way to find the public key
 * of an NKey seed file, which natsOptions_SetNKeyFromSeed wants beside the
 * file. An NKey is base32 (RFC 4648, no padding) of prefix bytes, a 32-byte
 * ed25519 key and a CRC-16 (XMODEM, little-endian): decode the seed, let
 * OpenSSL compute the ed25519 public key, encode it with the user prefix.
 * The seed bytes are wiped before returning. */
#include "natsauth.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEY_PREFIX_SEED (18u << 3) /* 'S' */
#define NKEY_PREFIX_USER (20u << 3) /* 'U' */
#define NKEY_RAW 35                 /* public key: prefix + 32-byte key + CRC-16 */
#define NKEY_TEXT 56                /* base32 of 35 bytes */
#define SEED_RAW 36                 /* seed: two prefix bytes + 32 + CRC-16 */
#define SEED_TEXT 58                /* base32 of 36 bytes (2 bits of padding) */
#define SEED_FILE_MAX 65536

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static uint16_t crc16(const uint8_t *p, size_t n) {
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

/* SEED_TEXT base32 characters at s into SEED_RAW bytes; -1 on a character
 * outside the alphabet. */
static int b32_decode(const char *s, uint8_t out[SEED_RAW]) {
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < SEED_TEXT; i++) {
        const char *q = s[i] != '\0' ? strchr(b32, s[i]) : NULL;
        if (q == NULL) return -1;
        acc = (acc << 5) | (uint32_t)(q - b32);
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o == SEED_RAW ? 0 : -1;
}

static void b32_encode(const uint8_t in[NKEY_RAW], char out[NKEY_TEXT + 1]) {
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < NKEY_RAW; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = b32[(acc >> bits) & 31];
        }
    }
    if (bits > 0) out[o++] = b32[(acc << (5 - bits)) & 31];
    out[o] = '\0';
}

/* The 32-byte seed of an encoded user seed at s; -1 if it is not one. */
static int seed_decode(const char *s, uint8_t seed[32]) {
    uint8_t raw[SEED_RAW];
    int rc = -1;
    if (b32_decode(s, raw) != 0) goto done;
    unsigned type = ((raw[0] & 7u) << 5) | ((raw[1] & 0xf8u) >> 3);
    uint16_t crc = (uint16_t)(raw[34] | (raw[35] << 8));
    if ((raw[0] & 0xf8u) != NKEY_PREFIX_SEED || type != NKEY_PREFIX_USER ||
        crc16(raw, 34) != crc)
        goto done;
    memcpy(seed, raw + 2, 32);
    rc = 0;
done:
    OPENSSL_cleanse(raw, sizeof raw);
    return rc;
}

static int public_from_seed(const uint8_t seed[32], char pub[NKEY_TEXT + 1]) {
    uint8_t raw[NKEY_RAW];
    size_t len = 32;
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    int rc = k != NULL && EVP_PKEY_get_raw_public_key(k, raw + 1, &len) == 1 && len == 32 ? 0 : -1;
    EVP_PKEY_free(k);
    if (rc != 0) return -1;
    raw[0] = NKEY_PREFIX_USER;
    uint16_t crc = crc16(raw, 33);
    raw[33] = (uint8_t)(crc & 0xff);
    raw[34] = (uint8_t)(crc >> 8);
    b32_encode(raw, pub);
    return 0;
}

int pd_natsauth_public_key(const char *text, char pub[57]) {
    uint8_t seed[32];
    for (const char *p = strstr(text, "SU"); p != NULL; p = strstr(p + 2, "SU")) {
        bool starts = p == text || strchr(b32, p[-1]) == NULL;
        if (!starts || seed_decode(p, seed) != 0) continue;
        if (strchr(b32, p[SEED_TEXT]) != NULL && p[SEED_TEXT] != '\0') continue;
        int rc = public_from_seed(seed, pub);
        OPENSSL_cleanse(seed, sizeof seed);
        return rc;
    }
    return -1;
}

/* Reads the whole (small) file at path; NULL on failure. */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf = f ? malloc(SEED_FILE_MAX + 1) : NULL;
    size_t n = buf ? fread(buf, 1, SEED_FILE_MAX, f) : 0;
    if (f) fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

static pd_status nats_fail(char *err, size_t cap, const char *setting, natsStatus s) {
    const char *detail = nats_GetLastError(NULL);
    snprintf(err, cap, "%s: %s%s%s", setting, natsStatus_GetText(s),
             detail && detail[0] ? ": " : "", detail ? detail : "");
    return PD_ECONFIG;
}

static pd_status apply_nkey(natsOptions *o, const char *path, char *err, size_t cap) {
    char pub[NKEY_TEXT + 1];
    char *text = read_text(path);
    if (text == NULL) {
        snprintf(err, cap, "PRESENCE_NATS_NKEY_SEED_FILE: cannot read '%.200s'", path);
        return PD_ECONFIG;
    }
    int rc = pd_natsauth_public_key(text, pub);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    if (rc != 0) {
        snprintf(err, cap, "PRESENCE_NATS_NKEY_SEED_FILE: '%.200s' holds no valid user NKey "
                 "seed (SU...)", path);
        return PD_ECONFIG;
    }
    natsStatus s = natsOptions_SetNKeyFromSeed(o, pub, path);
    return s == NATS_OK ? PD_OK : nats_fail(err, cap, "PRESENCE_NATS_NKEY_SEED_FILE", s);
}

static pd_status apply_tls(natsOptions *o, const pd_config *c, char *err, size_t cap) {
    bool tls = c->nats_tls_ca[0] || c->nats_tls_cert[0] || strstr(c->nats_url, "tls://");
    natsStatus s;
    if (!tls) return PD_OK;
    if ((s = natsOptions_SetSecure(o, true)) != NATS_OK)
        return nats_fail(err, cap, "PRESENCE_NATS_URL (tls)", s);
    if (c->nats_tls_ca[0] &&
        (s = natsOptions_LoadCATrustedCertificates(o, c->nats_tls_ca)) != NATS_OK)
        return nats_fail(err, cap, "PRESENCE_NATS_TLS_CA", s);
    if (c->nats_tls_cert[0] &&
        (s = natsOptions_LoadCertificatesChain(o, c->nats_tls_cert, c->nats_tls_key)) != NATS_OK)
        return nats_fail(err, cap, "PRESENCE_NATS_TLS_CERT/KEY", s);
    return PD_OK;
}

pd_status pd_natsauth_apply(natsOptions *o, const pd_config *c, char *err, size_t cap) {
    natsStatus s = NATS_OK;
    const char *what = NULL;
    if (cap > 0) err[0] = '\0';
    if (c->nats_user[0]) {
        what = "PRESENCE_NATS_USER";
        s = natsOptions_SetUserInfo(o, c->nats_user, c->nats_password);
    } else if (c->nats_token[0]) {
        what = "PRESENCE_NATS_TOKEN";
        s = natsOptions_SetToken(o, c->nats_token);
    } else if (c->nats_creds_file[0]) {
        what = "PRESENCE_NATS_CREDS_FILE";
        s = natsOptions_SetUserCredentialsFromFiles(o, c->nats_creds_file, NULL);
    } else if (c->nats_nkey_seed_file[0]) {
        pd_status ps = apply_nkey(o, c->nats_nkey_seed_file, err, cap);
        if (ps != PD_OK) return ps;
    }
    if (s != NATS_OK) return nats_fail(err, cap, what, s);
    return apply_tls(o, c, err, cap);
}
