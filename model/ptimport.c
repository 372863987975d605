/* model/ptimport.c: imports the FLAME authors' pretrained SASRec from a PyTorch .pt file.
 *
 * A .pt file (torch.save, zip serialisation) is a zip archive whose entries are stored
 * uncompressed: <prefix>/data.pkl (the pickled state_dict, which we do not interpret),
 * <prefix>/byteorder ("little"), <prefix>/version, and one <prefix>/data/<k> per tensor
 * holding its raw little-endian float32 values, row-major. The keys k follow the state_dict
 * order, which docs/MODEL.md section 5 documents (for NL blocks):
 *
 *   0 item_emb (NI+1, C)   1 pos_emb (L, C)   2-3 LN_emb gamma, beta (C)
 *   4 + 10 l + 0..9        block l attention: Wq (C,C), bq, Wk, bk, Wv, bv, Wo (C,C), bo,
 *                          LN_att gamma, beta
 *   4 + 10 NL + 6 l + 0..5 block l FFN: W1 (FF,C), b1 (FF), W2 (C,FF), b2 (C), LN_ffn
 *                          gamma, beta
 *
 * so an archive with K data keys has NL = (K - 4) / 16 blocks. C comes from key 2, L from
 * key 1, NI from key 0 (rows - 1), FF from block 0's b1. The .pt carries no head count and
 * the head count does not change any shape: NH is FLAME's default 2 (model_hparams_default),
 * as are dropout 0.5 and ln_eps 1e-12. PyTorch Linear weights are [out, in] like ours, so
 * tensors are copied as they are; only Wq, Wk, Wv (and their biases) are stacked into our
 * per-block qkv tensors.
 *
 * The zip reader is deliberately small and strict. It finds the end of central directory
 * record by searching backwards (a comment may follow it), walks the central directory, and
 * takes each entry's data offset from its LOCAL header, whose name and extra lengths may
 * differ from the central ones (PyTorch pads local extras to align the data). Sizes and CRCs
 * come from the central directory: PyTorch sets the data-descriptor flag and leaves them zero
 * in the local headers. A ZIP64 end record (which PyTorch writes even for small files) is
 * ignored unless the classic end record defers to it. Refused with a message: ZIP64 sizes or
 * offsets (0xFFFFFFFF markers), multi-disk archives, encrypted or
 * compressed data entries, anything pointing past the end of the file, CRC mismatches,
 * missing or duplicated keys, sizes that do not match the inferred shapes, non-finite
 * values. Nothing is allocated for the model until all of that has passed. */
#include "common/common.h"
#include "model/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT_SIG_LOCAL 0x04034b50u
#define PT_SIG_CENTRAL 0x02014b50u
#define PT_SIG_EOCD 0x06054b50u
#define PT_LOCAL_SIZE 30u   /* fixed part of a local header */
#define PT_CENTRAL_SIZE 46u /* fixed part of a central directory entry */
#define PT_EOCD_SIZE 22u    /* end of central directory record without its comment */
#define PT_MAX_COMMENT 65535u
#define PT_NI_MAX ((size_t)2147483646u) /* item ids are int32 and the table has NI + 1 rows */
#define PT_NH_NOTE "NH is not stored in a .pt; FLAME's default is used"

/* A central directory entry (fields as stored). */
typedef struct {
  const char *name; /* not NUL-terminated: nlen bytes inside the file buffer */
  size_t nlen;
  uint16_t flags;  /* general purpose bit flag */
  uint16_t method; /* 0 stored, 8 deflate, ... */
  uint32_t crc;
  uint32_t csize; /* compressed size */
  uint32_t usize; /* uncompressed size */
  uint32_t loff;  /* offset of the local header */
} pt_entry;

/* Where a data key goes in our layout. */
typedef struct {
  int t;       /* MODEL_T_* */
  size_t off;  /* offset in floats within the tensor */
  size_t rows; /* shape of the key's array (rows x cols; cols = 1 for vectors) */
  size_t cols;
  char what[40]; /* human-readable name, e.g. "block 1 Wk" */
} pt_slot;

typedef struct {
  const char *path;
  char *err;
  size_t errlen;
  const unsigned char *buf; /* the whole file */
  size_t n;
} pt_ctx;

static int pt_fail(pt_ctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int pt_fail(pt_ctx *c, int code, const char *fmt, ...) {
  if (c->err && c->errlen > 0) {
    int k = snprintf(c->err, c->errlen, "%s: ", c->path);
    if (k >= 0 && (size_t)k < c->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
      va_end(ap);
    }
    /* Entry names come from the file: keep the message one printable line. */
    for (char *p = c->err; *p; p++)
      if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
  }
  return code;
}

/* Finds the end of central directory record: the last signature whose comment length
 * reaches exactly the end of the file (which skips a signature that happens to sit inside
 * the comment). Returns 0 with *pos set, or FL_ETRUNC / FL_EFORMAT. */
static int pt_find_eocd(pt_ctx *c, size_t *pos) {
  if (c->n >= PT_EOCD_SIZE) {
    size_t lo = c->n - PT_EOCD_SIZE > PT_MAX_COMMENT ? c->n - PT_EOCD_SIZE - PT_MAX_COMMENT : 0;
    for (size_t p = c->n - PT_EOCD_SIZE + 1; p-- > lo;) {
      if (fl_get_le32(c->buf + p) == PT_SIG_EOCD &&
          (size_t)fl_get_le16(c->buf + p + 20) == c->n - p - PT_EOCD_SIZE) {
        *pos = p;
        return 0;
      }
    }
  }
  /* A zip starts with a local header: if it does, the end is what is missing. */
  if (c->n >= 4 && fl_get_le32(c->buf) == PT_SIG_LOCAL)
    return pt_fail(c, FL_ETRUNC,
                   "zip archive truncated (no end of central directory record in %zu bytes)", c->n);
  return pt_fail(c, FL_EFORMAT, "not a zip archive (no end of central directory record)");
}

/* Reads the central directory (count entries at [off, off + size)) into e. */
static int pt_read_central(pt_ctx *c, size_t off, size_t size, size_t count, pt_entry *e) {
  size_t p = off, end = off + size;
  for (size_t i = 0; i < count; i++) {
    if (end - p < PT_CENTRAL_SIZE)
      return pt_fail(c, FL_EFORMAT, "central directory entry %zu runs past the directory", i);
    const unsigned char *h = c->buf + p;
    if (fl_get_le32(h) != PT_SIG_CENTRAL)
      return pt_fail(c, FL_EFORMAT, "bad central directory signature at offset %zu", p);
    size_t nlen = fl_get_le16(h + 28), xlen = fl_get_le16(h + 30), clen = fl_get_le16(h + 32);
    if (end - p - PT_CENTRAL_SIZE < nlen + xlen + clen)
      return pt_fail(c, FL_EFORMAT, "central directory entry %zu runs past the directory", i);
    e[i].name = (const char *)h + PT_CENTRAL_SIZE;
    e[i].nlen = nlen;
    e[i].flags = fl_get_le16(h + 8);
    e[i].method = fl_get_le16(h + 10);
    e[i].crc = fl_get_le32(h + 16);
    e[i].csize = fl_get_le32(h + 20);
    e[i].usize = fl_get_le32(h + 24);
    e[i].loff = fl_get_le32(h + 42);
    if (fl_get_le16(h + 34) != 0)
      return pt_fail(c, FL_EFORMAT, "entry '%.*s' is on another disk (multi-disk archive)",
                     (int)nlen, e[i].name);
    /* 0xFFFFFFFF says "the real value is in the ZIP64 extra field". */
    if (e[i].csize == 0xFFFFFFFFu || e[i].usize == 0xFFFFFFFFu || e[i].loff == 0xFFFFFFFFu)
      return pt_fail(c, FL_EFORMAT,
                     "entry '%.*s' uses ZIP64 (sizes or offset 0xFFFFFFFF): ZIP64 archives are "
                     "not supported",
                     (int)nlen, e[i].name);
    p += PT_CENTRAL_SIZE + nlen + xlen + clen;
  }
  return 0;
}

/* Validates entry e as a stored entry (method, flags, local header, bounds, CRC) and sets
 * *data to its bytes (e->usize of them). */
static int pt_entry_data(pt_ctx *c, const pt_entry *e, const unsigned char **data) {
  int nl = (int)e->nlen;
  if (e->flags & 1u) return pt_fail(c, FL_EFORMAT, "entry '%.*s' is encrypted", nl, e->name);
  if (e->method != 0)
    return pt_fail(c, FL_EFORMAT,
                   "entry '%.*s' is compressed (method %u); only stored entries (method 0) are "
                   "supported",
                   nl, e->name, (unsigned)e->method);
  if (e->csize != e->usize)
    return pt_fail(c, FL_EFORMAT,
                   "stored entry '%.*s' has compressed size %u != uncompressed size %u", nl,
                   e->name, e->csize, e->usize);
  size_t lo = e->loff;
  if (lo > c->n || c->n - lo < PT_LOCAL_SIZE)
    return pt_fail(c, FL_ETRUNC,
                   "local header of entry '%.*s' (offset %zu) runs past the end "
                   "of the file (%zu bytes)",
                   nl, e->name, lo, c->n);
  const unsigned char *h = c->buf + lo;
  if (fl_get_le32(h) != PT_SIG_LOCAL)
    return pt_fail(c, FL_EFORMAT, "bad local header signature for entry '%.*s' at offset %zu", nl,
                   e->name, lo);
  /* The local name and extra lengths, not the central ones, say where the data starts. */
  size_t start = lo + PT_LOCAL_SIZE + fl_get_le16(h + 26) + fl_get_le16(h + 28);
  if (start > c->n || c->n - start < e->usize)
    return pt_fail(c, FL_ETRUNC,
                   "entry '%.*s' (%u bytes at offset %zu) runs past the end of the file (%zu "
                   "bytes)",
                   nl, e->name, e->usize, start, c->n);
  uint32_t crc = fl_crc32(0, c->buf + start, e->usize);
  if (crc != e->crc)
    return pt_fail(c, FL_ECHECKSUM,
                   "entry '%.*s': CRC-32 mismatch (central directory %08x, data %08x): file "
                   "corrupted",
                   nl, e->name, e->crc, crc);
  *data = c->buf + start;
  return 0;
}

/* If e is "<prefix>/data/<k>" (prefix one path component, k decimal without leading zeros),
 * sets *plen to the prefix length and *key, and returns 1. */
static int pt_data_key(const pt_entry *e, size_t *plen, size_t *key) {
  const char *s = e->name, *slash = memchr(s, '/', e->nlen);
  if (!slash || slash == s) return 0;
  size_t p = (size_t)(slash - s), rest = e->nlen - p - 1;
  if (rest < 6 || memcmp(slash + 1, "data/", 5) != 0) return 0;
  const char *d = slash + 6;
  size_t nd = rest - 5;
  if (nd > 9 || (nd > 1 && d[0] == '0')) return 0;
  size_t k = 0;
  for (size_t i = 0; i < nd; i++) {
    if (d[i] < '0' || d[i] > '9') return 0;
    k = k * 10 + (size_t)(d[i] - '0');
  }
  *plen = p;
  *key = k;
  return 1;
}

/* The destination and shape of data key k for hp and NI items (k < 4 + 16 NL). */
static void pt_slot_of(const model_hparams *hp, size_t NI, size_t k, pt_slot *s) {
  static const char *const att[10] = {
      "Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo", "LN_att gamma", "LN_att beta",
  };
  static const char *const ffn[6] = {"W1", "b1", "W2", "b2", "LN_ffn gamma", "LN_ffn beta"};
  size_t C = hp->C, FF = hp->FF, NL = hp->NL;
  s->off = 0;
  s->cols = 1;
  if (k < 4) {
    static const int t[4] = {MODEL_T_ITEM, MODEL_T_POS, MODEL_T_LNE_W, MODEL_T_LNE_B};
    static const char *const w[4] = {"item_emb", "pos_emb", "LN_emb gamma", "LN_emb beta"};
    s->t = t[k];
    s->rows = k == 0 ? NI + 1 : k == 1 ? hp->L : C;
    s->cols = k < 2 ? C : 1;
    snprintf(s->what, sizeof s->what, "%s", w[k]);
  } else if (k < 4 + 10 * NL) {
    size_t l = (k - 4) / 10, j = (k - 4) % 10;
    snprintf(s->what, sizeof s->what, "block %zu %s", l, att[j]);
    s->rows = C;
    switch (j) {
    case 0: /* Wq, Wk, Wv: rows [0,C), [C,2C), [2C,3C) of block l's stacked qkv */
    case 2:
    case 4:
      s->t = MODEL_T_QKVW;
      s->cols = C;
      s->off = (3 * l + j / 2) * C * C;
      break;
    case 1: /* bq, bk, bv likewise */
    case 3:
    case 5:
      s->t = MODEL_T_QKVB;
      s->off = (3 * l + j / 2) * C;
      break;
    case 6:
      s->t = MODEL_T_ATTPROJW;
      s->cols = C;
      s->off = l * C * C;
      break;
    case 7:
      s->t = MODEL_T_ATTPROJB;
      s->off = l * C;
      break;
    case 8:
      s->t = MODEL_T_LN1W;
      s->off = l * C;
      break;
    default:
      s->t = MODEL_T_LN1B;
      s->off = l * C;
      break;
    }
  } else {
    size_t l = (k - 4 - 10 * NL) / 6, j = (k - 4 - 10 * NL) % 6;
    snprintf(s->what, sizeof s->what, "block %zu %s", l, ffn[j]);
    switch (j) {
    case 0:
      s->t = MODEL_T_FCW;
      s->rows = FF;
      s->cols = C;
      s->off = l * FF * C;
      break;
    case 1:
      s->t = MODEL_T_FCB;
      s->rows = FF;
      s->off = l * FF;
      break;
    case 2:
      s->t = MODEL_T_FCPROJW;
      s->rows = C;
      s->cols = FF;
      s->off = l * C * FF;
      break;
    case 3:
      s->t = MODEL_T_FCPROJB;
      s->rows = C;
      s->off = l * C;
      break;
    case 4:
      s->t = MODEL_T_LN2W;
      s->rows = C;
      s->off = l * C;
      break;
    default:
      s->t = MODEL_T_LN2B;
      s->rows = C;
      s->off = l * C;
      break;
    }
  }
}

/* Checks the optional <prefix>/byteorder entry: the data are read as little-endian. */
static int pt_check_byteorder(pt_ctx *c, const pt_entry *e, size_t count, const char *prefix,
                              size_t plen) {
  for (size_t i = 0; i < count; i++) {
    if (e[i].nlen != plen + 10 || memcmp(e[i].name, prefix, plen) != 0 ||
        memcmp(e[i].name + plen, "/byteorder", 10) != 0)
      continue;
    const unsigned char *d;
    int rc = pt_entry_data(c, &e[i], &d);
    if (rc != 0) return rc;
    if (e[i].usize != 6 || memcmp(d, "little", 6) != 0)
      return pt_fail(c, FL_EFORMAT,
                     "entry '%.*s' is not \"little\": only little-endian archives are supported",
                     (int)e[i].nlen, e[i].name);
  }
  return 0;
}

/* Imports the .pt at path into *m (freshly allocated with model_alloc, step 0; free with
 * model_free). On failure returns -errno (unreadable file), FL_EFORMAT, FL_ETRUNC,
 * FL_ECHECKSUM, FL_EMISSING, FL_ESHAPE or FL_ERANGE, writes one line "path: what" to err
 * (when err is not NULL), and leaves *m untouched. A non-zero padding row is kept as read,
 * with a warning. */
int ptimport_load(const char *path, model_net *m, char *err, size_t errlen) {
  pt_ctx c = {.path = path, .err = err, .errlen = errlen};
  void *file = NULL;
  pt_entry *ent = NULL;              /* (count) central directory */
  size_t *key = NULL;                /* (ndata) key k -> entry index, or SIZE_MAX */
  const unsigned char **data = NULL; /* (ndata) key k -> its bytes in file */
  int rc = fl_read_file(path, &file, &c.n);
  if (rc != 0) return pt_fail(&c, rc, "cannot read: %s", fl_strerror(rc));
  c.buf = file;

  size_t eocd = 0;
  if ((rc = pt_find_eocd(&c, &eocd)) != 0) goto fail_file;
  const unsigned char *h = c.buf + eocd;
  size_t count = fl_get_le16(h + 10), cd_size = fl_get_le32(h + 12), cd_off = fl_get_le32(h + 16);
  /* PyTorch (miniz) always writes a ZIP64 end record and locator before this record, even
   * for small archives; they only matter when a field here holds the 0xFFFF(FFFF) marker. */
  if (fl_get_le16(h + 8) == 0xFFFFu || count == 0xFFFFu || cd_size == 0xFFFFFFFFu ||
      cd_off == 0xFFFFFFFFu) {
    rc = pt_fail(&c, FL_EFORMAT,
                 "ZIP64 archive (end record fields 0xFFFF/0xFFFFFFFF): ZIP64 archives are not "
                 "supported");
    goto fail_file;
  }
  if (fl_get_le16(h + 4) != 0 || fl_get_le16(h + 6) != 0 || fl_get_le16(h + 8) != count) {
    rc = pt_fail(&c, FL_EFORMAT, "multi-disk zip archives are not supported");
    goto fail_file;
  }
  if (cd_off > eocd || eocd - cd_off < cd_size) {
    rc = pt_fail(&c, FL_EFORMAT,
                 "central directory (%zu bytes at offset %zu) overlaps its end record at %zu",
                 cd_size, cd_off, eocd);
    goto fail_file;
  }
  if (count == 0) {
    rc = pt_fail(&c, FL_EMISSING, "empty zip archive (no entries)");
    goto fail_file;
  }
  ent = xcalloc(count, sizeof *ent);
  if ((rc = pt_read_central(&c, cd_off, cd_size, count, ent)) != 0) goto fail_ent;

  /* The data keys: one prefix, keys 0..K-1 each exactly once. */
  size_t ndata = 0, plen = 0;
  const char *prefix = NULL;
  for (size_t i = 0; i < count; i++) {
    size_t pl, k;
    if (!pt_data_key(&ent[i], &pl, &k)) continue;
    if (prefix && (pl != plen || memcmp(prefix, ent[i].name, pl) != 0)) {
      rc = pt_fail(&c, FL_EFORMAT, "data entries under two prefixes ('%.*s' and '%.*s')", (int)plen,
                   prefix, (int)pl, ent[i].name);
      goto fail_ent;
    }
    prefix = ent[i].name;
    plen = pl;
    ndata++;
  }
  if (ndata == 0) {
    rc = pt_fail(&c, FL_EMISSING, "no <prefix>/data/<k> entries (not a PyTorch archive?)");
    goto fail_ent;
  }
  key = xmalloc(ndata * sizeof *key);
  for (size_t k = 0; k < ndata; k++) key[k] = SIZE_MAX;
  for (size_t i = 0; i < count; i++) {
    size_t pl, k;
    if (!pt_data_key(&ent[i], &pl, &k) || k >= ndata) continue; /* k >= ndata: a gap below */
    if (key[k] != SIZE_MAX) {
      rc = pt_fail(&c, FL_EFORMAT, "entry '%.*s' appears twice", (int)ent[i].nlen, ent[i].name);
      goto fail_key;
    }
    key[k] = i;
  }
  for (size_t k = 0; k < ndata; k++) {
    if (key[k] == SIZE_MAX) {
      rc = pt_fail(&c, FL_EMISSING, "entry '%.*s/data/%zu' missing (%zu data entries found)",
                   (int)plen, prefix, k, ndata);
      goto fail_key;
    }
  }
  if (ndata < 20 || (ndata - 4) % 16 != 0) {
    rc =
        pt_fail(&c, FL_ESHAPE,
                "%zu data entries: a SASRec with NL blocks has 4 + 16 NL (20, 36, 52, ...)", ndata);
    goto fail_key;
  }
  if ((rc = pt_check_byteorder(&c, ent, count, prefix, plen)) != 0) goto fail_key;

  data = xmalloc(ndata * sizeof *data);
  for (size_t k = 0; k < ndata; k++) {
    const pt_entry *e = &ent[key[k]];
    if ((rc = pt_entry_data(&c, e, &data[k])) != 0) goto fail_data;
    if (e->usize % sizeof(float) != 0) {
      rc = pt_fail(&c, FL_ESHAPE, "entry '%.*s' has %u bytes, not a whole number of float32",
                   (int)e->nlen, e->name, e->usize);
      goto fail_data;
    }
  }

  /* Shapes: C from LN_emb gamma, L and NI from the tables, FF from block 0's b1. */
  size_t NL = (ndata - 4) / 16;
#define PT_FLOATS(k) ((size_t)ent[key[k]].usize / sizeof(float))
  size_t C = PT_FLOATS(2), FF = PT_FLOATS(4 + 10 * NL + 1);
  if (C == 0 || PT_FLOATS(1) % C != 0 || PT_FLOATS(0) % C != 0 || PT_FLOATS(0) / C < 2) {
    rc = pt_fail(&c, FL_ESHAPE,
                 "cannot infer shapes: LN_emb gamma has %zu floats, pos_emb %zu, item_emb %zu "
                 "(need multiples of C = %zu, item_emb at least 2 rows)",
                 C, PT_FLOATS(1), PT_FLOATS(0), C);
    goto fail_data;
  }
  size_t L = PT_FLOATS(1) / C, NI = PT_FLOATS(0) / C - 1;
  model_hparams hp;
  model_hparams_default(&hp); /* NH, dropout and ln_eps are not in the file */
  hp.C = (uint32_t)C;
  hp.NL = (uint32_t)NL;
  hp.FF = (uint32_t)FF;
  hp.L = (uint32_t)L;
  if (C > UINT32_MAX || NL > UINT32_MAX || FF > UINT32_MAX || L > UINT32_MAX ||
      model_hparams_check(&hp) != 0) {
    rc = pt_fail(&c, FL_ERANGE,
                 "unusable inferred shapes C=%zu NL=%zu FF=%zu L=%zu (NH=%u; " PT_NH_NOTE ")", C,
                 NL, FF, L, hp.NH);
    goto fail_data;
  }
  if (NI > PT_NI_MAX) {
    rc = pt_fail(&c, FL_ERANGE, "item count %zu out of range (1..%zu)", NI, PT_NI_MAX);
    goto fail_data;
  }
  size_t sizes[MODEL_MAX_TENSORS];
  model_tensor_sizes(&hp, NI, sizes);
  for (size_t k = 0; k < ndata; k++) {
    pt_slot s;
    pt_slot_of(&hp, NI, k, &s);
    size_t want = s.rows * s.cols;
    if (PT_FLOATS(k) != want || s.off + want > sizes[s.t]) {
      rc = pt_fail(&c, FL_ESHAPE, "key %zu (%s): %zu floats, expected %zu x %zu = %zu", k, s.what,
                   PT_FLOATS(k), s.rows, s.cols, want);
      goto fail_data;
    }
    for (size_t i = 0; i < want; i++) {
      if (!isfinite(fl_get_lef32(data[k] + 4 * i))) {
        rc = pt_fail(&c, FL_ERANGE, "key %zu (%s): value %zu is not finite", k, s.what, i);
        goto fail_data;
      }
    }
  }

  /* Everything checked: build the model aside and hand it over whole. */
  model_net nm;
  memset(&nm, 0, sizeof nm);
  if ((rc = model_alloc(&nm, &hp, NI)) != 0) {
    rc = pt_fail(&c, rc, "cannot allocate the model: %s", fl_strerror(rc));
    goto fail_data;
  }
  for (size_t k = 0; k < ndata; k++) {
    pt_slot s;
    pt_slot_of(&hp, NI, k, &s);
    float *dst = nm.p.t[s.t] + s.off;
    for (size_t i = 0; i < s.rows * s.cols; i++) dst[i] = fl_get_lef32(data[k] + 4 * i);
  }
#undef PT_FLOATS
  size_t nz = 0;
  for (size_t i = 0; i < C; i++) nz += nm.p.t[MODEL_T_ITEM][i] != 0.0f;
  if (nz) fl_warn("%s: padding row 0 of item_emb has %zu non-zero values; kept as read", path, nz);

  free(data);
  free(key);
  free(ent);
  free(file);
  *m = nm;
  return 0;

fail_data:
  free(data);
fail_key:
  free(key);
fail_ent:
  free(ent);
fail_file:
  free(file);
  return rc;
}
