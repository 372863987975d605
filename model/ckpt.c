/* model/ckpt.c: checkpoints of the parameter block (ckpt_save, ckpt_load), and training
 * states, which add what a run needs to continue (ckpt_state_save, ckpt_state_load; at the
 * end of the file).
 *
 * File format, versions 1 and 2. Every field little-endian, serialised field by field (never
 * a struct dump, so padding and host byte order never reach the disk). Version 1 is a SASRec
 * network (the only backbone it knew); version 2 records the backbone, and is what a network
 * of any other backbone is written as (SASRec stays version 1, so its files are unchanged):
 *
 *   offset size  field
 *        0    8  magic "FLAMECKP"
 *        8    4  u32 version (1)
 *       12    4  u32 header size in bytes (76 for version 1)
 *       16    4  u32 C
 *       20    4  u32 NL
 *       24    4  u32 NH
 *       28    4  u32 FF
 *       32    4  u32 L
 *       36    4  f32 dropout
 *       40    4  f32 ln_eps
 *       44    8  u64 NI (items; the item table has NI + 1 rows)
 *       52    8  u64 step (Adam's t)
 *       60    8  u64 nparams (floats in the payload)
 *   version 1 (header size 76):
 *       68    4  u32 CRC-32 of the payload bytes
 *       72    4  u32 CRC-32 of header bytes [0, 72)
 *       76       payload: the parameter block, nparams float32, in model_tensor_sizes order
 *   version 2 (header size 80):
 *       68    4  u32 backbone (model_backbone: 0 sasrec)
 *       72    4  u32 CRC-32 of the payload bytes
 *       76    4  u32 CRC-32 of header bytes [0, 76)
 *       80       payload, as in version 1 (the backbone's tensor table decides the order)
 *
 * Only parameters are stored: gradients and Adam moments are not, so a run started from a
 * checkpoint restarts Adam's moments from zero (step is kept for the bias correction and the
 * dropout masks); a training state keeps them.
 * The dropout seed is not stored either: it is configuration, set by the caller after a load.
 *
 * A load reads the whole file, then validates in an order where every check only relies on
 * bytes already validated: magic (on the bytes present, so a short foreign file reads as
 * foreign rather than truncated), size >= header, version, header size, header CRC, the
 * backbone, the hyper-parameters, NI, nparams against the shapes they imply, the exact file size,
 * the payload CRC and finally that every parameter is finite. Only then is a model allocated, so a
 * refused file never disturbs the caller's model. The CRCs catch corruption; the finite check
 * catches a model that diverged before it was saved (a NaN would otherwise be served). */
#include "common/common.h"
#include "model/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_MAGIC "FLAMECKP"
#define CKPT_MAGIC_LEN 8
#define CKPT_VERSION_SASREC 1u              /* a SASRec network, the backbone implied */
#define CKPT_VERSION 2u                     /* the newest: the backbone recorded */
#define CKPT_HEADER_MIN 76u                 /* version 1's header, the shortest */
#define CKPT_NI_MAX ((uint64_t)2147483646u) /* 2^31 - 2: item ids are int32, NI + 1 rows */

/* A version's header size (0 for a version this build does not read). The two CRCs are the
 * header's last 8 bytes: the payload's, then the header's over every byte before it. */
static uint32_t ckpt_header_size(uint32_t version) {
  return version == CKPT_VERSION_SASREC ? 76u : version == CKPT_VERSION ? 80u : 0u;
}

/* The names of the backbones this build knows, "sasrec, ..." into buf. */
static const char *ckpt_backbones(char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  for (uint32_t i = 0; i < MODEL_NBACKBONES && used < n; i++) {
    int w = snprintf(buf + used, n - used, "%s%s", i ? ", " : "", model_backbone_name(i));
    if (w < 0) break;
    used += (size_t)w;
  }
  return buf;
}

/* Formats "path: message" into err (if any) and returns code. */
static int ckpt_fail(char *err, size_t errlen, int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int ckpt_fail(char *err, size_t errlen, int code, const char *path, const char *fmt, ...) {
  if (err && errlen > 0) {
    int n = snprintf(err, errlen, "%s: ", path);
    if (n >= 0 && (size_t)n < errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return code;
}

/* Copies n floats to little-endian bytes (a plain copy on little-endian hosts). */
static void ckpt_floats_to_le(unsigned char *dst, const float *src, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(dst, src, n * sizeof(float));
#else
  for (size_t i = 0; i < n; i++) fl_put_lef32(dst + 4 * i, src[i]);
#endif
}

static void ckpt_floats_from_le(float *dst, const unsigned char *src, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(dst, src, n * sizeof(float));
#else
  for (size_t i = 0; i < n; i++) dst[i] = fl_get_lef32(src + 4 * i);
#endif
}

/* Writes m's hyper-parameters, NI, step and parameter block to path atomically
 * (fl_write_atomic: the old file stays intact until the new one is complete). Requires a
 * model whose parameter block holds at least model_tensor_sizes(&m->hp, m->NI) floats
 * (FL_ESHAPE otherwise). Non-finite parameters are written as they are; ckpt_load refuses
 * them. Returns 0, FL_ESHAPE or -errno. */
int ckpt_save(const char *path, const model_net *m) {
  size_t sizes[MODEL_MAX_TENSORS];
  size_t np = model_tensor_sizes(&m->hp, m->NI, sizes);
  uint32_t version = m->hp.backbone == MODEL_BACKBONE_SASREC ? CKPT_VERSION_SASREC : CKPT_VERSION;
  uint32_t hsize = ckpt_header_size(version);
  if (!m->params || np == 0 || m->nparams < np || np > (SIZE_MAX - hsize) / sizeof(float))
    return FL_ESHAPE;
  size_t payload = np * sizeof(float);
  size_t total = hsize + payload;
  unsigned char *buf = xmalloc(total);
  unsigned char *h = buf;

  memcpy(h, CKPT_MAGIC, CKPT_MAGIC_LEN);
  fl_put_le32(h + 8, version);
  fl_put_le32(h + 12, hsize);
  fl_put_le32(h + 16, m->hp.C);
  fl_put_le32(h + 20, m->hp.NL);
  fl_put_le32(h + 24, m->hp.NH);
  fl_put_le32(h + 28, m->hp.FF);
  fl_put_le32(h + 32, m->hp.L);
  fl_put_lef32(h + 36, m->hp.dropout);
  fl_put_lef32(h + 40, m->hp.ln_eps);
  fl_put_le64(h + 44, (uint64_t)m->NI);
  fl_put_le64(h + 52, m->step);
  fl_put_le64(h + 60, (uint64_t)np);
  if (version != CKPT_VERSION_SASREC) fl_put_le32(h + 68, m->hp.backbone);
  ckpt_floats_to_le(buf + hsize, m->params, np);
  fl_put_le32(h + hsize - 8, fl_crc32(0, buf + hsize, payload));
  fl_put_le32(h + hsize - 4, fl_crc32(0, h, hsize - 4));

  int err = fl_write_atomic(path, buf, total);
  free(buf);
  return err;
}

/* A checkpoint's header, validated (ckpt_parse_header). */
typedef struct {
  uint32_t hsize;   /* header bytes: the payload starts here */
  model_hparams hp; /* with the backbone */
  uint64_t ni, step;
  size_t want;   /* floats in the payload, as the shapes imply */
  uint32_t pcrc; /* the payload's stored CRC-32 */
} ckpt_header;

/* Validates the header of a file of n bytes at buf, from the magic number to the parameter
 * count against the shapes (the order of the top of this file). 0 or an error with err. */
static int ckpt_parse_header(const char *path, const unsigned char *buf, size_t n, ckpt_header *h,
                             char *err, size_t errlen) {
  int rc;
  size_t mlen = n < CKPT_MAGIC_LEN ? n : CKPT_MAGIC_LEN;
  if (memcmp(buf, CKPT_MAGIC, mlen) != 0) {
    return ckpt_fail(err, errlen, FL_EMAGIC, path, "not a flame checkpoint (bad magic number)");
  }
  if (n < CKPT_HEADER_MIN) {
    return ckpt_fail(err, errlen, FL_ETRUNC, path,
                     "file truncated (expected at least %u header bytes, found %zu)",
                     CKPT_HEADER_MIN, n);
  }
  uint32_t version = fl_get_le32(buf + 8), want_hsize = ckpt_header_size(version);
  if (want_hsize == 0) {
    return ckpt_fail(err, errlen, FL_EVERSION, path,
                     "unsupported checkpoint version %u (this build reads versions 1 to %u)",
                     version, CKPT_VERSION);
  }
  uint32_t hsize = fl_get_le32(buf + 12);
  if (hsize != want_hsize) {
    return ckpt_fail(err, errlen, FL_EFORMAT, path,
                     "header size %u, version %u headers are %u bytes", hsize, version, want_hsize);
  }
  if (n < hsize) {
    return ckpt_fail(err, errlen, FL_ETRUNC, path,
                     "file truncated (expected at least %u header bytes, found %zu)", hsize, n);
  }
  uint32_t hcrc = fl_get_le32(buf + hsize - 4), hcrc_got = fl_crc32(0, buf, hsize - 4);
  if (hcrc != hcrc_got) {
    return ckpt_fail(err, errlen, FL_ECHECKSUM, path,
                     "header checksum mismatch (stored %08x, computed %08x): file corrupted", hcrc,
                     hcrc_got);
  }
  char known[128];
  uint32_t backbone =
      version == CKPT_VERSION_SASREC ? MODEL_BACKBONE_SASREC : fl_get_le32(buf + 68);
  if (!model_backbone_name(backbone)) {
    return ckpt_fail(err, errlen, FL_ERANGE, path,
                     "a network of backbone %u, which this build does not know (it knows: %s)",
                     backbone, ckpt_backbones(known, sizeof known));
  }

  model_hparams hp;
  hp.C = fl_get_le32(buf + 16);
  hp.NL = fl_get_le32(buf + 20);
  hp.NH = fl_get_le32(buf + 24);
  hp.FF = fl_get_le32(buf + 28);
  hp.L = fl_get_le32(buf + 32);
  hp.dropout = fl_get_lef32(buf + 36);
  hp.ln_eps = fl_get_lef32(buf + 40);
  hp.backbone = backbone;
  uint64_t ni = fl_get_le64(buf + 44);
  uint64_t step = fl_get_le64(buf + 52);
  uint64_t np = fl_get_le64(buf + 60);
  uint32_t pcrc = fl_get_le32(buf + hsize - 8);
  if ((rc = model_hparams_check(&hp)) != 0) {
    return ckpt_fail(err, errlen, rc, path,
                     "unusable hyper-parameters for %s (C=%u NL=%u NH=%u FF=%u L=%u dropout=%g "
                     "ln_eps=%g)",
                     model_backbone_name(backbone), hp.C, hp.NL, hp.NH, hp.FF, hp.L,
                     (double)hp.dropout, (double)hp.ln_eps);
  }
  if (ni < 1 || ni > CKPT_NI_MAX) {
    return ckpt_fail(err, errlen, FL_ERANGE, path, "item count %llu out of range (1..%llu)",
                     (unsigned long long)ni, (unsigned long long)CKPT_NI_MAX);
  }
  size_t sizes[MODEL_MAX_TENSORS], want = model_tensor_sizes(&hp, (size_t)ni, sizes);
  if (np != (uint64_t)want) {
    return ckpt_fail(err, errlen, FL_ESHAPE, path,
                     "parameter count %llu does not match the shapes (expected %zu)",
                     (unsigned long long)np, want);
  }
  h->hsize = hsize;
  h->hp = hp;
  h->ni = ni;
  h->step = step;
  h->want = want;
  h->pcrc = pcrc;
  return 0;
}

/* Validates the payload after a valid header h: the exact file size, the payload CRC, every
 * parameter finite. 0 or an error with err. */
static int ckpt_check_payload(const char *path, const unsigned char *buf, size_t n,
                              const ckpt_header *h, char *err, size_t errlen) {
  size_t want = h->want, hsize = h->hsize;
  uint32_t pcrc = h->pcrc;
  const model_hparams *hp = &h->hp;
  if (want > (SIZE_MAX - hsize) / sizeof(float)) {
    return ckpt_fail(err, errlen, FL_ERANGE, path, "parameter count %zu too large", want);
  }
  size_t payload = want * sizeof(float);
  size_t expect = hsize + payload;
  if (n != expect) {
    return ckpt_fail(err, errlen, n < expect ? FL_ETRUNC : FL_EFORMAT, path,
                     n < expect ? "file truncated (expected %zu bytes, found %zu)"
                                : "trailing bytes after the parameters (expected %zu bytes, "
                                  "found %zu)",
                     expect, n);
  }
  const unsigned char *pl = buf + hsize;
  uint32_t pcrc_got = fl_crc32(0, pl, payload);
  if (pcrc != pcrc_got) {
    return ckpt_fail(err, errlen, FL_ECHECKSUM, path,
                     "parameter checksum mismatch (stored %08x, computed %08x): file corrupted",
                     pcrc, pcrc_got);
  }
  size_t sizes[MODEL_MAX_TENSORS], base = 0;
  model_tensor_sizes(hp, (size_t)h->ni, sizes);
  for (size_t t = 0; t < model_ntensors(hp); t++) {
    for (size_t i = 0; i < sizes[t]; i++) {
      if (!isfinite(fl_get_lef32(pl + 4 * (base + i)))) {
        return ckpt_fail(err, errlen, FL_ERANGE, path,
                         "parameter %s[%zu] is not finite (the model diverged before it was "
                         "saved)",
                         model_tensor_name(hp, t), i);
      }
    }
    base += sizes[t];
  }

  return 0;
}

/* Loads a checkpoint written by ckpt_save into *m (freshly allocated with model_alloc:
 * parameters only, gradients and Adam state NULL, m->step restored; free with model_free).
 * Every byte is validated before it is used (see the top of this file). On failure returns
 * -errno (unreadable file), FL_ETRUNC, FL_EMAGIC, FL_EVERSION, FL_EFORMAT, FL_ECHECKSUM,
 * FL_ERANGE or FL_ESHAPE, writes one line "path: what" to err (when err is not NULL), and
 * leaves *m untouched. */
int ckpt_load(const char *path, model_net *m, char *err, size_t errlen) {
  void *file = NULL;
  size_t n = 0;
  int rc = fl_read_file(path, &file, &n);
  if (rc != 0) return ckpt_fail(err, errlen, rc, path, "cannot read: %s", fl_strerror(rc));
  const unsigned char *buf = file;
  ckpt_header h;
  if ((rc = ckpt_parse_header(path, buf, n, &h, err, errlen)) == 0 &&
      (rc = ckpt_check_payload(path, buf, n, &h, err, errlen)) == 0) {
    /* Everything checked: build the new model aside and hand it over whole. */
    model_net nm;
    memset(&nm, 0, sizeof nm);
    if ((rc = model_alloc(&nm, &h.hp, (size_t)h.ni)) != 0) {
      rc = ckpt_fail(err, errlen, rc, path, "cannot allocate the model: %s", fl_strerror(rc));
    } else {
      ckpt_floats_from_le(nm.params, buf + h.hsize, h.want);
      nm.step = h.step;
      *m = nm;
    }
  }
  free(file);
  return rc;
}

/* ---- training state (`flame train --state`) ----
 *
 * File format, version 2, little-endian, field by field like the checkpoint (version 1 is
 * the same without the last setting, the backbone: it is read as SASRec's):
 *
 *   offset        size  field
 *        0           8  magic "FLAMETRS"
 *        8           4  u32 version (2)
 *       12           4  u32 K: settings stored (TRAIN_NKEYS; version 1: TRAIN_NKEYS - 1)
 *       16         8 K  u64 settings, in TRAIN_KEY_* order
 *   16 + 8K         64  u64 epoch, since_best, best_epoch, best_step, step, shuffles,
 *                       cursor, val.users
 *   80 + 8K         64  f64 val.hr10, val.ndcg10, val.hr20, val.ndcg20, best_ndcg, best_sec,
 *                       elapsed_sec, last_loss
 *  144 + 8K          8  u64 nparams
 *  152 + 8K  16 nparams four float32 blocks: parameters, Adam's first and second moments,
 *                       the best weights
 *   end - 4          4  u32 CRC-32 of every byte before it
 */
#define TRS_MAGIC "FLAMETRS"
#define TRS_VERSION 2u
#define TRS_NU64 8u
#define TRS_NF64 8u
#define TRS_FIXED(K) (16u + 8u * (size_t)(K) + 8u * (TRS_NU64 + TRS_NF64) + 8u)

static void ckpt_put_f64(unsigned char *p, double d) {
  uint64_t v;
  memcpy(&v, &d, sizeof v);
  fl_put_le64(p, v);
}

static double ckpt_get_f64(const unsigned char *p) {
  uint64_t v = fl_get_le64(p);
  double d;
  memcpy(&d, &v, sizeof d);
  return d;
}

/* Names of the TRAIN_KEY_* settings, for a refused resume. */
static const char *const trs_key_names[TRAIN_NKEYS] = {
    [TRAIN_KEY_NI] = "items",
    [TRAIN_KEY_C] = "dim",
    [TRAIN_KEY_NL] = "blocks",
    [TRAIN_KEY_NH] = "heads",
    [TRAIN_KEY_FF] = "ffn width",
    [TRAIN_KEY_L] = "maxlen",
    [TRAIN_KEY_DROPOUT] = "dropout",
    [TRAIN_KEY_LN_EPS] = "LayerNorm eps",
    [TRAIN_KEY_SAMPLES] = "training samples",
    [TRAIN_KEY_DATA_CRC] = "data checksum",
    [TRAIN_KEY_ANCHOR_CRC] = "anchor",
    [TRAIN_KEY_ANCHOR_DROPOUT] = "anchor dropout",
    [TRAIN_KEY_LR] = "lr",
    [TRAIN_KEY_BATCH] = "batch",
    [TRAIN_KEY_SEED] = "seed",
    [TRAIN_KEY_DROPOUT_SEED] = "dropout seed",
    [TRAIN_KEY_EPOCH_SAMPLES] = "epoch-samples",
    [TRAIN_KEY_PROTOCOL] = "protocol",
    [TRAIN_KEY_TAU] = "tau",
    [TRAIN_KEY_LAMBDA0] = "lambda0",
    [TRAIN_KEY_LAMBDAR] = "lambda-r",
    [TRAIN_KEY_SCHEDULE] = "schedule",
    [TRAIN_KEY_BLOCKDIAG] = "blockdiag mask",
    [TRAIN_KEY_DETACH] = "detach-weights",
    [TRAIN_KEY_WARM] = "init anchor",
    [TRAIN_KEY_PER_BLOCK] = "per-block modules",
    [TRAIN_KEY_PATHS] = "paths",
    [TRAIN_KEY_BACKBONE] = "backbone",
};

/* 1 for the settings stored as float32 bits. */
static int trs_key_is_float(int k) {
  return k == TRAIN_KEY_DROPOUT || k == TRAIN_KEY_LN_EPS || k == TRAIN_KEY_ANCHOR_DROPOUT ||
         k == TRAIN_KEY_LR || k == TRAIN_KEY_TAU || k == TRAIN_KEY_LAMBDA0 ||
         k == TRAIN_KEY_LAMBDAR;
}

/* Formats one setting's value. */
static void trs_key_str(char *buf, size_t n, int k, uint64_t v) {
  if (k == TRAIN_KEY_ANCHOR_CRC) {
    if (v == 0)
      snprintf(buf, n, "none (SASRec)");
    else
      snprintf(buf, n, "of checksum %08x", (unsigned)(uint32_t)v);
  } else if (k == TRAIN_KEY_DATA_CRC) {
    snprintf(buf, n, "%08x", (unsigned)v);
  } else if (trs_key_is_float(k)) {
    uint32_t b = (uint32_t)v;
    float f;
    memcpy(&f, &b, sizeof f);
    for (int digits = 6; digits <= 9; digits++) { /* the shortest that reads back exactly */
      snprintf(buf, n, "%.*g", digits, (double)f);
      if (strtof(buf, NULL) == f) break;
    }
  } else {
    snprintf(buf, n, "%llu", (unsigned long long)v);
  }
}

/* 0 if the stored settings are the run's; else FL_ESETTINGS naming the first that differs. */
static int trs_key_check(const char *path, const uint64_t *have, const uint64_t *want, char *err,
                         size_t errlen) {
  for (int k = 0; k < TRAIN_NKEYS; k++) {
    if (have[k] == want[k]) continue;
    char a[32], b[32];
    trs_key_str(a, sizeof a, k, have[k]);
    trs_key_str(b, sizeof b, k, want[k]);
    return ckpt_fail(err, errlen, FL_ESETTINGS, path,
                     "the run it holds has %s %s, this one %s; a resumed run keeps its data and "
                     "settings (only --epochs and --patience may change)",
                     trs_key_names[k], a, b);
  }
  return 0;
}

int ckpt_state_save(const char *path, const train_state *s, const model_net *m, const float *best) {
  size_t np = m->nparams, fixed = TRS_FIXED(TRAIN_NKEYS);
  if (!m->params || !m->adam_m || !m->adam_v || np > (SIZE_MAX - fixed - 4) / 16) return FL_ESHAPE;
  size_t total = fixed + 16 * np + 4;
  unsigned char *buf = xmalloc(total), *p = buf;
  memcpy(p, TRS_MAGIC, CKPT_MAGIC_LEN);
  fl_put_le32(p + 8, TRS_VERSION);
  fl_put_le32(p + 12, TRAIN_NKEYS);
  p += 16;
  for (int k = 0; k < TRAIN_NKEYS; k++, p += 8) fl_put_le64(p, s->key[k]);
  const uint64_t u[TRS_NU64] = {s->epoch, s->since_best, s->best_epoch, s->best_step,
                                m->step,  s->shuffles,   s->cursor,     (uint64_t)s->val.users};
  for (size_t i = 0; i < TRS_NU64; i++, p += 8) fl_put_le64(p, u[i]);
  const double d[TRS_NF64] = {s->val.hr10,  s->val.ndcg10, s->val.hr20,    s->val.ndcg20,
                              s->best_ndcg, s->best_sec,   s->elapsed_sec, s->last_loss};
  for (size_t i = 0; i < TRS_NF64; i++, p += 8) ckpt_put_f64(p, d[i]);
  fl_put_le64(p, (uint64_t)np);
  p += 8;
  const float *blocks[4] = {m->params, m->adam_m, m->adam_v, best};
  for (int b = 0; b < 4; b++, p += 4 * np) ckpt_floats_to_le(p, blocks[b], np);
  fl_put_le32(p, fl_crc32(0, buf, total - 4));
  int err = fl_write_atomic(path, buf, total);
  free(buf);
  return err;
}

int ckpt_state_load(const char *path, const uint64_t *want, train_state *s, model_net *m,
                    float *best, char *err, size_t errlen) {
  void *file = NULL;
  size_t n = 0;
  int rc = fl_read_file(path, &file, &n);
  if (rc != 0) return ckpt_fail(err, errlen, rc, path, "cannot read: %s", fl_strerror(rc));
  const unsigned char *buf = file, *p;
  size_t mlen = n < CKPT_MAGIC_LEN ? n : CKPT_MAGIC_LEN;
  if (memcmp(buf, TRS_MAGIC, mlen) != 0) {
    rc = ckpt_fail(err, errlen, FL_EMAGIC, path, "not a flame training state (bad magic number)");
    goto out;
  }
  if (n < 16) {
    rc = ckpt_fail(err, errlen, FL_ETRUNC, path, "file truncated (%zu bytes)", n);
    goto out;
  }
  uint32_t version = fl_get_le32(buf + 8), nkeys = fl_get_le32(buf + 12);
  if (version != 1 && version != TRS_VERSION) {
    rc = ckpt_fail(err, errlen, FL_EVERSION, path,
                   "unsupported training state version %u (this build reads versions 1 to %u)",
                   version, TRS_VERSION);
    goto out;
  }
  uint32_t vkeys = version == 1 ? TRAIN_KEY_BACKBONE : TRAIN_NKEYS; /* v1: no backbone */
  if (nkeys != vkeys) {
    rc = ckpt_fail(err, errlen, FL_EFORMAT, path, "%u settings stored, version %u has %u", nkeys,
                   version, vkeys);
    goto out;
  }
  size_t fixed = TRS_FIXED(nkeys), np = m->nparams, expect = fixed + 16 * np + 4;
  if (n < fixed) {
    rc = ckpt_fail(err, errlen, FL_ETRUNC, path,
                   "file truncated (expected at least %zu header bytes, found %zu)", fixed, n);
    goto out;
  }
  uint64_t fnp = fl_get_le64(buf + fixed - 8);
  if (fnp != (uint64_t)np) {
    rc =
        ckpt_fail(err, errlen, FL_ESHAPE, path, "holds %llu parameters, this run's network has %zu",
                  (unsigned long long)fnp, np);
    goto out;
  }
  if (n != expect) {
    rc = ckpt_fail(err, errlen, n < expect ? FL_ETRUNC : FL_EFORMAT, path,
                   n < expect ? "file truncated (expected %zu bytes, found %zu)"
                              : "trailing bytes (expected %zu bytes, found %zu)",
                   expect, n);
    goto out;
  }
  uint32_t crc = fl_get_le32(buf + n - 4), crc_got = fl_crc32(0, buf, n - 4);
  if (crc != crc_got) {
    rc = ckpt_fail(err, errlen, FL_ECHECKSUM, path,
                   "checksum mismatch (stored %08x, computed %08x): file corrupted", crc, crc_got);
    goto out;
  }
  p = buf + 16;
  uint64_t have[TRAIN_NKEYS];
  have[TRAIN_KEY_BACKBONE] = MODEL_BACKBONE_SASREC;
  for (uint32_t k = 0; k < nkeys; k++, p += 8) have[k] = fl_get_le64(p);
  if ((rc = trs_key_check(path, have, want, err, errlen)) != 0) goto out;
  /* Everything checked: fill the caller's state. */
  memcpy(s->key, have, sizeof have);
  uint64_t u[TRS_NU64];
  double d[TRS_NF64];
  for (size_t i = 0; i < TRS_NU64; i++, p += 8) u[i] = fl_get_le64(p);
  for (size_t i = 0; i < TRS_NF64; i++, p += 8) d[i] = ckpt_get_f64(p);
  s->epoch = u[0];
  s->since_best = u[1];
  s->best_epoch = u[2];
  s->best_step = u[3];
  m->step = u[4];
  s->shuffles = u[5];
  s->cursor = u[6];
  s->val.users = (size_t)u[7];
  s->val.hr10 = d[0];
  s->val.ndcg10 = d[1];
  s->val.hr20 = d[2];
  s->val.ndcg20 = d[3];
  s->best_ndcg = d[4];
  s->best_sec = d[5];
  s->elapsed_sec = d[6];
  s->last_loss = d[7];
  p += 8;
  float *blocks[4] = {m->params, m->adam_m, m->adam_v, best};
  for (int b = 0; b < 4; b++, p += 4 * np) ckpt_floats_from_le(blocks[b], p, np);
  rc = 0;
out:
  free(file);
  return rc;
}
