/* model/model.h: the model engine (docs/MODEL.md section 1): a network is a backbone (today
 * SASRec; model_hparams.backbone picks it) under a tied scoring head, with one contiguous
 * parameter block, forward and backward passes, Adam, checkpoints that record the backbone,
 * the PyTorch-zip importer, datasets and offline metrics. The objectives are the
 * cross-entropy (model_forward) and FLAME (flame_step), both for any backbone.
 *
 * Shape letters: B batch (samples), T packed tokens, C channels, NH heads, HS head size,
 * FF the FFN inner width, NL blocks, L max sequence length, NI items (1-based; row 0 of the
 * item table is padding).
 *
 * Batches are PACKED: sample b's real items are tok[off[b] .. off[b+1]), oldest first, the
 * newest (the position that is trained and served) last. A sample of n items occupies
 * positions L-n .. L-1, exactly where the left-padded window of docs/MODEL.md section 1 puts them;
 * padding is never read by a real position, so leaving it out is exact. A batch may also carry the
 * padding explicitly (item 0 tokens, n = L): keys with item 0 are then masked, which
 * reproduces the padded computation (used to measure what packing buys).
 *
 * Every function returning int returns 0 or a negative error code (common.h). */
#ifndef FL_MODEL_H
#define FL_MODEL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* The backbones (model/internal.h: the encoder behind an ops table). */
typedef enum {
  MODEL_BACKBONE_SASREC, /* SASRec's causal transformer (model/sasrec.c) */
  MODEL_NBACKBONES
} model_backbone;

/* "sasrec" for MODEL_BACKBONE_SASREC; NULL for an unknown id. */
const char *model_backbone_name(uint32_t id);
/* Parses a backbone name ("sasrec"). Returns 0 or FL_ERANGE. */
int model_backbone_parse(const char *s, uint32_t *id);

/* Hyper-parameters (docs/MODEL.md section 1: the defaults of model_hparams_default). */
typedef struct {
  uint32_t C;        /* channels d (64) */
  uint32_t NL;       /* transformer blocks (2) */
  uint32_t NH;       /* attention heads (2); C % NH == 0 */
  uint32_t FF;       /* FFN inner width (4C = 256) */
  uint32_t L;        /* max sequence length (50) */
  float dropout;     /* dropout probability (0.5) */
  float ln_eps;      /* LayerNorm epsilon (1e-12) */
  uint32_t backbone; /* model_backbone (MODEL_BACKBONE_SASREC) */
} model_hparams;

void model_hparams_default(model_hparams *hp);
/* 0 if the hyper-parameters are usable (a known backbone, shapes it accepts), FL_ERANGE
 * otherwise. */
int model_hparams_check(const model_hparams *hp);

/* The parameter tensors, views into one contiguous block, in block order. Each backbone has
 * its own table, at most MODEL_MAX_TENSORS long; in every one the item table comes last, so a
 * model with more items has the smaller one's block as its prefix: growing the catalogue is
 * one copy (the daemon's trainer), and so is carrying Adam's moments over. model_items gives
 * the item table whatever the backbone. SASRec's table: */
#define MODEL_MAX_TENSORS 32
enum {
  MODEL_T_POS,      /* (L, C) position table */
  MODEL_T_LNE_W,    /* (C) LN_emb gamma */
  MODEL_T_LNE_B,    /* (C) LN_emb beta */
  MODEL_T_QKVW,     /* (NL, 3C, C) per block Wq, Wk, Wv stacked, each [out, in] */
  MODEL_T_QKVB,     /* (NL, 3C) */
  MODEL_T_ATTPROJW, /* (NL, C, C) Wo */
  MODEL_T_ATTPROJB, /* (NL, C) */
  MODEL_T_LN1W,     /* (NL, C) LN_att gamma */
  MODEL_T_LN1B,     /* (NL, C) */
  MODEL_T_FCW,      /* (NL, FF, C) W1 */
  MODEL_T_FCB,      /* (NL, FF) */
  MODEL_T_FCPROJW,  /* (NL, C, FF) W2 */
  MODEL_T_FCPROJB,  /* (NL, C) */
  MODEL_T_LN2W,     /* (NL, C) LN_ffn gamma */
  MODEL_T_LN2B,     /* (NL, C) */
  MODEL_T_ITEM,     /* (NI + 1, C) item table, row 0 = padding (zero, never updated) */
  MODEL_NTENSORS    /* SASRec's tensors */
};

typedef struct {
  float *t[MODEL_MAX_TENSORS]; /* tensor views, indexed by the backbone's table (MODEL_T_*) */
} model_tensors;

/* Tensors in hp's backbone's table (0 for an unknown backbone). */
size_t model_ntensors(const model_hparams *hp);
/* Number of floats of each tensor of hp's backbone for these hyper-parameters and NI items
 * (sizes: model_ntensors(hp) entries written). Returns the total (0 for an unknown
 * backbone). */
size_t model_tensor_sizes(const model_hparams *hp, size_t NI, size_t sizes[MODEL_MAX_TENSORS]);
/* Tensor i's name in hp's backbone's table, for messages ("?" when out of range). */
const char *model_tensor_name(const model_hparams *hp, size_t i);

/* A packed batch (see the top of this file). */
typedef struct {
  size_t B;           /* samples */
  size_t T;           /* tokens = off[B] */
  const int32_t *tok; /* (T) item ids; 0 only as explicit padding */
  const size_t *off;  /* (B + 1) sample offsets into tok, off[0] = 0 */
  const int32_t *tgt; /* (B) next item of each sample (1..NI), or NULL when not training */
  /* Sampled softmax (big catalogues): when neg is set, each target's cross-entropy is taken
   * against these nneg candidates (1..NI, drawn uniformly with replacement by the caller,
   * shared by the batch) instead of the whole catalogue. A candidate's logit is shifted by
   * log((NI - 1) / nneg), so that the exponentials estimate the sum over every other item;
   * a candidate equal to the row's target is masked. Gradients then reach only the item
   * rows of tok, tgt and neg (model_batch_rows). */
  const int32_t *neg;
  size_t nneg;
} model_batch;

/* Activations of one pass, preallocated for up to Bmax samples and Tmax tokens. Opaque to
 * callers; model_acts_h exposes the sequence representations. */
typedef struct model_acts model_acts;

/* The model: hyper-parameters, parameters, and (after model_train_alloc) gradients and
 * Adam state, each one contiguous block laid out by model_tensor_sizes. */
typedef struct {
  model_hparams hp;
  size_t NI;       /* items (the table has NI + 1 rows) */
  size_t nparams;  /* floats in each block */
  float *params;   /* (nparams) */
  model_tensors p; /* views into params */
  float *grads;    /* (nparams) or NULL */
  model_tensors g; /* views into grads */
  float *adam_m;   /* (nparams) first moments or NULL */
  float *adam_v;   /* (nparams) second moments or NULL */
  uint64_t step;   /* optimizer steps taken (Adam's t) */
  uint64_t seed;   /* seeds the dropout masks together with step */
  int last_only;   /* 1: the last block computes queries/FFN for the last position only */
  size_t ntensors; /* tensors of its backbone's table; the item table is the last */
} model_net;

/* The item table (NI + 1, C) of m's parameters / gradients, whatever the backbone. */
static inline float *model_items(const model_net *m) { return m->p.t[m->ntensors - 1]; }
static inline float *model_item_grads(const model_net *m) { return m->g.t[m->ntensors - 1]; }

/* Allocates the parameter block for NI items and initialises it as docs/MODEL.md section 1 says
 * (Linear and Embedding weights N(0, 0.02^2) from seed, biases 0, LN gamma 1 / beta 0, padding row
 * 0). Gradients and Adam state stay NULL. */
int model_init(model_net *m, const model_hparams *hp, size_t NI, uint64_t seed);
/* Allocates the parameter block without initialising it (for loaders). */
int model_alloc(model_net *m, const model_hparams *hp, size_t NI);
/* Adds zeroed gradients and Adam state. */
void model_train_alloc(model_net *m);
/* Adds gradients and Adam state with undefined contents, for a caller that clears the
 * gradients before every step (model_zero_grad or model_zero_grad_rows) and sets every Adam
 * moment itself: zeroing a big catalogue's blocks only to overwrite them costs the memory
 * bandwidth that serving needs. */
void model_train_alloc_uninit(model_net *m);
void model_free(model_net *m);

/* Activations for up to Bmax samples and Tmax tokens (Tmax <= Bmax * L). */
model_acts *model_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax);
void model_acts_free(model_acts *a);
/* (B, C) sequence representations of the last forward pass. */
const float *model_acts_h(const model_acts *a);
/* Bytes allocated for these activations (the logits buffer once a loss was computed).
 * Buffers are sized for Bmax/Tmax but only the pages a batch touches become resident. */
size_t model_acts_bytes(const model_acts *a);

/* Forward pass over a packed batch: fills the representations h (B, C). train = 1 applies
 * dropout (masks from m->seed and m->step). If b->tgt is given, returns the mean
 * cross-entropy over the full catalogue, or over b->neg (sampled), and keeps what backward
 * needs; otherwise 0.
 * Requires b->B <= Bmax and b->T <= Tmax of a. */
float model_forward(const model_net *m, model_acts *a, const model_batch *b, int train);
/* Backward of the last model_forward (with targets, train as given then): ACCUMULATES
 * into m->grads. */
void model_backward(model_net *m, model_acts *a, const model_batch *b);
void model_zero_grad(model_net *m);

/* Adam (beta1 0.9, beta2 0.999, eps 1e-8, no weight decay, PyTorch's bias correction);
 * increments m->step. Row 0 of the item table never moves. */
void model_adam_step(model_net *m, float lr);

/* Sparse rows for sampled-softmax steps, where a step's gradient reaches few item rows:
 * model_batch_rows lists the distinct item rows of b's tok, tgt and neg into rows (room for
 * T + B + nneg) and returns their count; mark (NI + 1 bytes, zero) is scratch, left zero.
 * model_adam_step_rows is Adam on every tensor but the item table and on the listed rows of
 * the table only ("lazy" Adam: a row's moments and weights move only in the steps that
 * touch it); model_zero_grad_rows zeroes the same. Their cost no longer grows with NI. */
size_t model_batch_rows(const model_batch *b, uint8_t *mark, int32_t *rows);
void model_adam_step_rows(model_net *m, float lr, const int32_t *rows, size_t n);
void model_zero_grad_rows(model_net *m, const int32_t *rows, size_t n);

/* scores (B, NI) = h (B, C) . item[1..NI]^T: score of item i is at column i - 1. */
void model_scores(const model_net *m, const float *h, size_t B, float *scores);

/* Useful floating-point operations of one training step (forward + backward) on this
 * batch, counting only what the packed computation needs (multiply-add = 2). */
double model_step_flops(const model_net *m, const model_batch *b);

/* Sets the BLAS thread count (OpenBLAS). */
void model_set_threads(int n);

/* Row-major C (M, N) = alpha * A (M, K) op B + beta * C, where op B is B (K, N) or, with
 * transB, B (N, K) transposed; transA likewise. lda/ldb/ldc are row strides. The one seam
 * to BLAS: model_matmul goes through cblas_sgemm, model_matmul_ref is the naive loop the
 * tests compare it with. */
void model_matmul(float *C, size_t ldc, const float *A, size_t lda, int transA, const float *B,
                  size_t ldb, int transB, size_t M, size_t N, size_t K, float alpha, float beta);
void model_matmul_ref(float *C, size_t ldc, const float *A, size_t lda, int transA, const float *B,
                      size_t ldb, int transB, size_t M, size_t N, size_t K, float alpha,
                      float beta);

/* ---- checkpoints (model/ckpt.c) ----
 * File: magic "FLAMECKP", version, hyper-parameters, item count, training step, parameter
 * count, CRC-32 of header and payload, then the parameter block (little-endian float32).
 * Written atomically. A load validates everything before using a byte; a truncated or
 * corrupted file is refused with a message in err. */
int ckpt_save(const char *path, const model_net *m);
/* Allocates *m (parameters, hyper-parameters, NI and m->step; Adam moments are not stored,
 * seed is 0 and last_only 1). On failure *m is untouched and err (if not NULL) holds one
 * line "path: what". */
int ckpt_load(const char *path, model_net *m, char *err, size_t errlen);

/* ---- the authors' PyTorch zip (model/ptimport.c, docs/MODEL.md section 5) ----
 * Reads the zip's central directory, finds the <prefix>/data/<k> entries, checks every
 * size against the shapes, infers C, L, FF, NL and NI from them (NH, dropout and ln_eps are
 * not in the file: FLAME's defaults, NH = 2) and fills a freshly allocated model. On failure
 * *m is untouched and err (if not NULL) holds one line "path: what". */
int ptimport_load(const char *path, model_net *m, char *err, size_t errlen);

/* ---- datasets (model/data.c) ---- */

/* Users' item sequences in time order. Both file formats (`user item` per line, or
 * `user item item ...` per line) load the same way: a line's items are appended to its
 * user's sequence in file order. Item ids are 1-based. */
typedef struct {
  size_t nusers;    /* users */
  size_t NI;        /* largest item id */
  size_t *off;      /* (nusers + 1) user u's items: items[off[u] .. off[u+1]), oldest first */
  int32_t *items;   /* (off[nusers]) */
  int64_t *user_id; /* (nusers) the user's id in the file */
  double *ts;       /* (off[nusers]) each event's timestamp (seconds), or NULL: the file has
                       none (sequences in file order) */
} data_set;

/* Loads a dataset file. On a malformed line returns FL_EFORMAT with "file:line: what" in
 * err; an unreadable file returns -errno with the reason in err; a file without items
 * FL_EEMPTY; more than 2^32 - 1 users FL_ERANGE. *ds is zeroed on failure. */
int data_load(const char *path, data_set *ds, char *err, size_t errlen);
void data_free(data_set *ds);
/* Keeps only the last keep items of every user (--protocol flame truncates to L + 3).
 * NI is unchanged. */
void data_truncate(data_set *ds, size_t keep);

/* ---- time-ordered data (model/events.c) ----
 * Timestamped interactions: DATA_FORMAT_UIT is `user item ts` per line (whitespace between
 * fields), DATA_FORMAT_INTER RecBole's atomic `.inter` file (tab-separated, a typed header such
 * as `user_id:token item_id:token rating:float timestamp:float`; the user_id and item_id
 * columns are required, timestamp is optional). Users and items are string tokens; they are
 * numbered in order of first appearance in time order (items 1, 2, ...), so the items known
 * at any point of the stream are those with the lowest indices. Each user's sequence is in
 * time order (ties in file order) with ds->ts set when the file has timestamps. user_id is
 * the token's value when every user token is a number, else the user's index + 1.
 * DATA_FORMAT_SEQ is data_load's `user item [item ...]`; DATA_FORMAT_AUTO picks INTER for a
 * name ending in ".inter", else SEQ. Errors as data_load's ("file:line: what"). */
typedef enum { DATA_FORMAT_AUTO, DATA_FORMAT_SEQ, DATA_FORMAT_UIT, DATA_FORMAT_INTER } data_format;
int data_load_format(const char *path, data_format fmt, data_set *ds, char *err, size_t errlen);
/* Parses "auto" / "seq" / "uit" / "inter". Returns 0 or FL_ERANGE. */
int data_format_parse(const char *s, data_format *out);

/* A training sample: user u's items before index end predict items[off[u] + end]. */
typedef struct {
  uint32_t user; /* user index */
  uint32_t end;  /* index of the target within the user's sequence */
} data_sample;

/* Leave-one-out training samples: every prefix of each user's training part (all but the
 * last two items): a user with n training items gives n - 1 samples. Returns the count;
 * *out is allocated. */
size_t data_train_samples(const data_set *ds, data_sample **out);

/* The split of a dataset into what a model was trained on and the stream after it: by time
 * (by_time, the data has timestamps): the first floor(frac * events) events in time order (ties:
 * user index, then position) before, the rest after in that order; per user: each user's first
 * floor(frac * len) items before, the rest after in round-robin order over the users (the
 * replayer's interleaving). Since each user's sequence is in time order, a user's events before
 * the split are always a prefix: cut[u] of them. after[k] = {user, index of the event in its
 * user's sequence}. */
typedef struct {
  size_t *cut;        /* (nusers) items of each user before the split */
  data_sample *after; /* (nafter) the events after the split, in stream order */
  size_t nafter;
  int by_time;
  double split_ts; /* by time: the timestamp of the first event after the split */
} data_split;
/* Every event of ds (which has timestamps) in time order, ties by user index then position:
 * out[k] = {user, index of the event in its user's sequence} (off[nusers] entries). */
void data_time_order(const data_set *ds, data_sample *out);
/* 0, FL_ERANGE (frac not in (0, 1)) or FL_EFORMAT (by time without timestamps). */
int data_split_make(const data_set *ds, double frac, int by_time, data_split *out);
void data_split_free(data_split *s);
/* out = the first cut[u] items of every user of ds (users kept, even empty); NI is the largest
 * item among them. */
void data_prefix(const data_set *ds, const size_t *cut, data_set *out);

/* Packs samples s[0..B) into a batch: each sample's context is the (up to) L items before
 * its target (every sample needs 1 <= end < its user's length). pad = 1 writes the padded
 * window instead (n = L, leading item-0 tokens). tok must hold B * L, off B + 1, tgt B. */
void data_pack(const data_set *ds, const data_sample *s, size_t B, size_t L, int pad, int32_t *tok,
               size_t *off, int32_t *tgt, model_batch *out);

/* ---- offline evaluation (model/eval.c) ---- */

typedef enum {
  EVAL_PROTOCOL_DEFAULT, /* history = the input window, excluded (-inf); rank = #greater */
  EVAL_PROTOCOL_FLAME    /* docs/MODEL.md section 4: history scored 0; rank = #greater */
} eval_protocol;

typedef enum { EVAL_VAL, EVAL_TEST } eval_split;

typedef struct {
  double hr10, ndcg10, hr20, ndcg20; /* means over users */
  size_t users;                      /* users evaluated */
} eval_metrics;

/* Rank (0-based) of the target among scores (NI, column i-1 = item i) after the protocol's
 * treatment of the history items hist[0..nhist): default protocol: history items are
 * excluded (-inf); flame protocol: their scores are set to 0. The target's score is read
 * after that treatment (as the reference does); a NaN target ranks NI. Modifies scores. */
size_t eval_rank(float *scores, size_t NI, int32_t target, const int32_t *hist, size_t nhist,
                 eval_protocol proto);
/* Items eval_ranks_chunked scores at a time. */
#define EVAL_CHUNK 4096

/* The ranks eval_rank gives with the default protocol, for B representations h (B, C) of
 * m with targets tgt[b] (1..NI) and histories tok[off[b] .. off[b+1]) (1..NI), without a
 * whole score row per sample: the catalogue is scored EVAL_CHUNK items at a time, so the
 * scores stay in cache however big it is (a row is 4 MB at 1M items). The target's score is
 * its own dot product (-inf if it is in the history). scratch holds B * EVAL_CHUNK floats. */
void eval_ranks_chunked(const model_net *m, const float *h, size_t B, const int32_t *tgt,
                        const int32_t *tok, const size_t *off, float *scratch, size_t *rank);
/* Adds one rank to running sums (m->users counts). */
void eval_add_rank(eval_metrics *m, size_t rank);
/* Turns sums into means. */
void eval_finish(eval_metrics *m);

/* Full-ranking evaluation of the model on users with at least 3 items: the input of a
 * validation sample is the L items before the second-to-last item, of a test sample the L
 * items before the last. History for ranking: default protocol = the input window; flame
 * protocol = every item before the target. Runs forward in eval mode in batches. Returns
 * FL_ESHAPE if the data has items beyond the model's table, FL_EEMPTY if no user has 3
 * items (metrics zeroed in both cases). */
int eval_run(const model_net *m, const data_set *ds, eval_protocol proto, eval_split split,
             eval_metrics *out);

/* Bytes eval_run allocates for m: its activations and score rows (for memory reports). */
size_t eval_workspace_bytes(const model_net *m);

/* HR@10 and NDCG@10 of m on the newest item of each user users[0..n) of ds (the daemon's
 * holdout of a round): its input is the L items before it that m knows (items beyond m's
 * table are left out of the input; a target beyond it is a miss; a user with no known item
 * before it too), the input items are excluded from the ranking (the default protocol), and
 * the whole catalogue is ranked in chunks. m is only read. */
eval_metrics eval_newest(const model_net *m, const data_set *ds, const uint32_t *users, size_t n);

/* Parses "default" / "flame". Returns 0 or FL_ERANGE. */
int eval_protocol_parse(const char *s, eval_protocol *out);

/* ---- offline training (model/train.c) ---- */

typedef struct {
  size_t epochs;        /* maximum epochs (200) */
  size_t patience;      /* stop after this many epochs without a better val NDCG@20 (20) */
  size_t epoch_samples; /* samples per epoch (0: all); a smaller epoch walks on through one
                           shuffled order, reshuffled once every sample was seen, so long
                           runs can be budgeted and validated more often */
  size_t batch;         /* samples per step (256) */
  float lr;             /* Adam learning rate (1e-3) */
  eval_protocol proto;  /* evaluation protocol (the caller truncates data for flame) */
  uint64_t seed;        /* shuffling and dropout */
  const char *out;      /* the best checkpoint is written here (atomically) at each improvement */
  const char *state;    /* not NULL: the training state is written here after every epoch, and
                           a run that finds it continues from it (settings must match; the
                           epoch budget and the patience may grow) */
  int progress;         /* 1: one line per epoch on stderr */
  const atomic_int *cancel; /* not NULL: checked before every step; nonzero stops the run with
                               -ECANCELED (the daemon's shutdown) */
} train_opts;

void train_opts_default(train_opts *o);

typedef struct {
  size_t best_epoch;      /* 1-based epoch with the best val NDCG@20 (0 if none ran) */
  size_t epochs_run;      /* epochs trained (counting those before a resume) */
  size_t resumed_epoch;   /* epochs already done in the state the run continued from (0) */
  eval_metrics val;       /* validation metrics of the best epoch */
  eval_metrics test;      /* test metrics of the best epoch's weights */
  double wall_sec;        /* whole run including evaluation (and before a resume) */
  double best_sec;        /* wall seconds until the best epoch finished */
  float last_loss;        /* mean training loss of the last epoch */
  size_t param_bytes;     /* one block; gradients and each Adam moment are the same size */
  size_t train_act_bytes; /* training activations (model_acts_bytes) */
  size_t eval_act_bytes;  /* evaluation activations and score rows */
  char why[512];          /* after a failure: one line saying what failed ("" if nothing to add) */
} train_result;

/* ---- training state (model/ckpt.c; `flame train --state`) ----
 * Everything a training run needs to continue bit for bit where it stopped: the parameters,
 * Adam's moments and step, the best weights so far and their bookkeeping, the position in
 * the shuffled sample order, and the settings the run was started with (train_state.key,
 * filled by train_model). File: magic "FLAMETRS", version, key count, the keys, the
 * progress fields, nparams, then four float32 blocks (parameters, first and second moments,
 * best weights), then a CRC-32 of every byte before it. Written atomically. */

/* The settings that decide a run's course, in file order: the network's shape (NI .. LN_EPS),
 * the data (SAMPLES: training samples; DATA_CRC: CRC-32 of the sequences after any
 * truncation), the anchor (ANCHOR_CRC: 0 for SASRec, else 2^32 + CRC-32 of its parameters),
 * the optimiser and order (LR .. EPOCH_SAMPLES; DROPOUT_SEED is the model's), the protocol
 * (it picks the best epoch), FLAME's knobs (TAU .. PATHS, 0 for SASRec) and the backbone. Floats
 * (dropouts, LN_EPS, LR, TAU, LAMBDA0, LAMBDAR) are stored as their float32 bits and so compared
 * exactly. Append only: the file's version changes with the list. */
enum {
  TRAIN_KEY_NI,
  TRAIN_KEY_C,
  TRAIN_KEY_NL,
  TRAIN_KEY_NH,
  TRAIN_KEY_FF,
  TRAIN_KEY_L,
  TRAIN_KEY_DROPOUT,
  TRAIN_KEY_LN_EPS,
  TRAIN_KEY_SAMPLES,
  TRAIN_KEY_DATA_CRC,
  TRAIN_KEY_ANCHOR_CRC,
  TRAIN_KEY_ANCHOR_DROPOUT,
  TRAIN_KEY_LR,
  TRAIN_KEY_BATCH,
  TRAIN_KEY_SEED,
  TRAIN_KEY_DROPOUT_SEED,
  TRAIN_KEY_EPOCH_SAMPLES,
  TRAIN_KEY_PROTOCOL,
  TRAIN_KEY_TAU,
  TRAIN_KEY_LAMBDA0,
  TRAIN_KEY_LAMBDAR,
  TRAIN_KEY_SCHEDULE,
  TRAIN_KEY_BLOCKDIAG,
  TRAIN_KEY_DETACH,
  TRAIN_KEY_WARM,
  TRAIN_KEY_PER_BLOCK,
  TRAIN_KEY_PATHS,
  TRAIN_KEY_BACKBONE, /* version 2 on; a version-1 state is SASRec's */
  TRAIN_NKEYS
};

typedef struct {
  uint64_t key[TRAIN_NKEYS]; /* the run's settings */
  uint64_t epoch;            /* epochs completed */
  uint64_t since_best;       /* epochs since the best one */
  uint64_t best_epoch;       /* 0: none yet */
  uint64_t best_step;        /* Adam step of the best weights */
  uint64_t shuffles;         /* shuffles of the sample order so far (a resume replays them:
                                each permutes the order the last one left) */
  uint64_t cursor;           /* next sample of that order */
  eval_metrics val;          /* validation metrics of the best epoch */
  double best_ndcg;          /* their NDCG@20 (-1 before any epoch) */
  double best_sec;           /* wall seconds of the run until the best epoch */
  double elapsed_sec;        /* wall seconds of the run so far */
  double last_loss;          /* mean training loss of the last epoch */
} train_state;

/* Writes s, m's parameters, Adam moments (m train-allocated) and step, and best (nparams
 * floats) to path atomically. Returns 0 or -errno. */
int ckpt_state_save(const char *path, const train_state *s, const model_net *m, const float *best);
/* Reads a state written by ckpt_state_save into s, m (train-allocated; its parameters,
 * moments and step) and best (m->nparams floats), if its settings are want (TRAIN_NKEYS).
 * Every byte is validated before any is used; on failure nothing is written and err holds
 * one line "path: what". Returns 0, -errno (-ENOENT: no such file, a fresh run), FL_ETRUNC,
 * FL_EMAGIC, FL_EVERSION, FL_EFORMAT, FL_ECHECKSUM, FL_ESHAPE (another parameter count) or
 * FL_ESETTINGS (err names the first setting that differs). */
int ckpt_state_load(const char *path, const uint64_t *want, train_state *s, model_net *m,
                    float *best, char *err, size_t errlen);

/* Trains m (already initialised, training state allocated here) on ds's leave-one-out
 * training samples with early stopping on validation NDCG@20; on return m holds the best
 * epoch's weights. With an anchor (anc, fo not NULL; declared below) every step is a
 * flame_step with lambda following fo's schedule over epochs (e = 1, 2, ...); anc is only
 * read. Returns 0 or a negative code: a failed checkpoint or state write, or a state it cannot
 * continue from (r->why says which). train_model is declared after the FLAME section. */

/* ---- FLAME training (model/flame.c, docs/MODEL.md section 2) ----
 * A frozen anchor network and the learnable one (both SASRec, same hyper-parameters). A
 * step is the plain cross-entropy of the learnable network plus lambda times the six NT-Xent
 * losses between the four paths ll, fl, lf, ff (embedding source, encoder source) at the
 * last position, weighted by the softmax of their negative mean similarity. The four paths
 * come from two encoder passes over [learnable embedding; anchor embedding] of each sample
 * under the 2x2 tiled mask. Only the learnable network has gradients; the anchor is read.
 * Beyond the paper (per_block): the embedding and every block are modules, 2^(1+NL) paths,
 * of which a random subset may be used per step; all pairs of the selected paths. */

typedef struct {
  float tau;      /* NT-Xent temperature (1) */
  float lambda0;  /* lambda at the start of the schedule (1) */
  float lambdaR;  /* lambda at its end (1e-5) */
  size_t R;       /* schedule length in epochs (200; the daemon counts steps) */
  int blockdiag;  /* 1: block-diagonal mask (independent paths, an ablation) */
  int detach_w;   /* 1: the pair weights are a stop-gradient */
  int warm_start; /* 1: the learnable network starts as a copy of the anchor */
  int per_block;  /* 0: two modules (embedding, encoder) as the paper; 1: the embedding
                     and every block are modules (1 + NL modules, 2^(1+NL) paths) */
  size_t paths;   /* paths per step: 0 = all; else a random subset of this many (>= 2) */
} flame_opts;

void flame_opts_default(flame_opts *o);
/* lambda_e = lambda0 * (lambdaR / lambda0)^(e / R). */
float flame_lambda(const flame_opts *o, double e);

/* Workspace of FLAME steps for batches of up to Bmax samples; per_block as in flame_opts. */
typedef struct flame_ws flame_ws;
flame_ws *flame_ws_new(const model_hparams *hp, size_t Bmax, int per_block);
void flame_ws_free(flame_ws *ws);

/* Pairs of paths of one step at most: 8 paths (per-block modules of a 2-block network). */
#define FLAME_MAX_PAIRS 28

typedef struct {
  float rec;                   /* the learnable network's cross-entropy */
  size_t npairs;               /* pairs of selected paths */
  float pair[FLAME_MAX_PAIRS]; /* their NT-Xent, in order (0,1) (0,2) .. of the selected
                                  paths; with two modules and all paths: (ll,fl) (ll,lf)
                                  (ll,ff) (fl,lf) (fl,ff) (lf,ff) */
  float w[FLAME_MAX_PAIRS];    /* their weights */
  double flops;                /* useful FLOPs of this step (counted as model_step_flops) */
} flame_parts;

/* One FLAME forward and backward on a packed batch with targets: returns the loss and
 * ACCUMULATES the learnable network's gradients (lrn->grads allocated). anc is only read; it
 * must have lrn's hyper-parameters and at least as many items; ws must have been made with
 * o->per_block. train = 1: dropout in both networks, masks (and the random path subset) from
 * lrn's seed and step. parts may be NULL. */
float flame_step(model_net *lrn, const model_net *anc, flame_ws *ws, const model_batch *bt,
                 const flame_opts *o, float lambda, int train, flame_parts *parts);

/* NT-Xent of one pair and its weight logit (exposed for tests): a, b (B, C); returns L_p and
 * sets *sim = mean_b a_b . b_b. With da, db not NULL, accumulates g * dL_p/da, dL_p/db. */
float flame_ntxent(const float *a, const float *b, size_t B, size_t C, float tau, float *sim,
                   float g, float *da, float *db, float *scratch);
/* Floats of scratch flame_ntxent needs. */
size_t flame_ntxent_scratch(size_t B, size_t C);
/* Bytes allocated by the workspace. */
size_t flame_ws_bytes(const flame_ws *ws);

/* ---- operations on whole networks (model/ops.c): what the daemon's trainer does with them,
 * so that no caller edits a network's blocks or ownership fields itself ---- */

/* dst = src with NI rows (NI >= src->NI): the same parameters, the new rows N(0, 0.02^2)
 * drawn from seed (which also becomes dst's dropout seed). No gradients or moments. Aborts
 * on out of memory (src's shape is valid). */
void model_grow(model_net *dst, const model_net *src, size_t NI, uint64_t seed);
/* 1 if every parameter of m is finite (a diverged round's candidate is not). */
int model_params_finite(const model_net *m);
/* dst = a parameters-only copy of src (no gradients or Adam state). Aborts like model_grow. */
void model_copy_params(model_net *dst, const model_net *src);
/* Moves src's parameter block into dst (a network without gradients or moments, e.g. for a
 * serving snapshot); src keeps its gradients and moments, and model_free(src) frees only
 * those. No copy: a big catalogue's table would cost its size again in memory bandwidth. */
void model_take_params(model_net *dst, model_net *src);
/* Swaps m's Adam moment blocks with *adam_m and *adam_v (either pair may be NULL): the
 * trainer keeps a promoted round's moments for the next round this way, and the blocks it
 * held go with m. */
void model_swap_moments(model_net *m, float **adam_m, float **adam_v);

/* ---- one training step (model/train.c), shared by train_model and the daemon's rounds ---- */

typedef struct train_step_ws train_step_ws;
/* A workspace for steps of up to B samples on networks of shape hp with NI items: FLAME's
 * (flame = 1, per_block as for flame_ws_new) or cross-entropy's activations (flame = 0);
 * negatives > 0: a sampled softmax over that many candidates per step (model_batch.neg). */
train_step_ws *train_step_ws_new(const model_hparams *hp, size_t B, size_t NI, int flame,
                                 int per_block, size_t negatives);
void train_step_ws_free(train_step_ws *w);
/* Bytes of the pass's workspace (flame_ws_bytes or model_acts_bytes). */
size_t train_step_ws_bytes(const train_step_ws *w);
/* One optimizer step on the samples s[0..nb) of ds (nb <= the workspace's B): packs them
 * (data_pack, no padding), draws the sampled candidates uniformly from 1..m->NI with rng
 * (sampled workspaces only), clears the gradients (only the rows the batch touches when
 * sampled), computes the loss (cross-entropy when anc is NULL, else flame_step against anc
 * with lambda, in training mode) and takes an Adam step with lr (rows only when sampled).
 * Returns the loss; *rec (may be NULL) gets FLAME's cross-entropy part (0 without anc). */
float train_step(model_net *m, const model_net *anc, train_step_ws *w, const data_set *ds,
                 const data_sample *s, size_t nb, const flame_opts *fo, float lambda, float lr,
                 fl_rng *rng, float *rec);

/* ---- online rounds (model/round.c): one fine-tuning round on a set of sequences, shared by
 * the daemon's trainer and `flame replay` (docs/MODEL.md section 3) ----
 * A round learns the events marked in learn[] (new since the last round, plus those the last
 * round held out) of the users that have them, plus a replay sample of other users; it holds
 * out the newest new event of up to `holdout` such users (with 3+ items) and validates the
 * candidate on them, and on the newest event of up to `retain` users it neither learned nor
 * replayed, against the serving network (the gate: round_passes). */
typedef struct round_opts {
  size_t steps;                     /* optimizer steps */
  size_t batch;                     /* samples per step */
  size_t replay;                    /* other users replayed */
  size_t holdout;                   /* holdout users at most */
  size_t retain;                    /* retained users checked for forgetting at most */
  size_t sampled_items;             /* catalogues above this train with a sampled softmax */
  size_t negatives;                 /* its candidates per step */
  uint64_t min_users;               /* users with new events a round needs (unless forced) */
  float lr, tau, lambda0, lambda_r; /* lambda from lambda0 to lambda_r; lambda0 0: plain CE */
  float dropout;                    /* the learnable network's */
  double margin;                    /* the gate's NDCG@10 margin */
  int new_targets;                  /* 1: a touched user's samples end only at events to learn */
  int seed_rows; /* 1: a new item's row starts as the mean of the rows of the items before it */
} round_opts;

/* What a round decided and measured. */
typedef struct {
  float loss, rec; /* mean loss of its steps and its cross-entropy part */
  uint64_t users, carried, holdout, retain, negatives;
  double cand_ndcg10, serv_ndcg10, cand_hr10, serv_hr10; /* on the holdout */
  double cand_retain_ndcg10, serv_retain_ndcg10;         /* on the retained users */
} round_figures;

/* A round's input, from its driver. */
typedef struct {
  const data_set *ds;           /* every user's sequence, oldest first */
  const uint32_t *learn;        /* (nusers) events to learn per user, the newest ones (0: none) */
  const uint32_t *fresh;        /* (nusers) of those, new (only these can be held out) */
  const model_net *base;        /* the weights the learner starts from */
  const model_net *serving;     /* what the gate compares with (NULL: none, any candidate passes) */
  const model_net *anchor;      /* the frozen anchor */
  const uint8_t *known;         /* (anchor->NI + 1) 1: the anchor trained that row (NULL: all); rows
                                   it did not, and rows beyond it, come from the learner */
  const float *adam_m, *adam_v; /* base's Adam moments to go on with (adam_n floats), or NULL */
  size_t adam_n;
  uint64_t adam_step;
  uint64_t grow_seed, dropout_seed;       /* the learner's new rows; its dropout masks */
  fl_rng *rng;                            /* shuffles and sampled candidates */
  const atomic_int *cancel;               /* not NULL: nonzero stops the round (ROUND_CANCELLED) */
  void (*on_step)(void *ctx, double sec); /* after every step (the trainer's duty cycle) */
  void *ctx;
  int poison; /* test hook: a NaN weight in the candidate before the gate */
} round_env;

enum { ROUND_PASSED, ROUND_WORSE, ROUND_NONFINITE, ROUND_CANCELLED };

/* One round. Returns -EAGAIN when it did not run (fewer than min_users users with new events
 * and not forced, or no user with two events); else ROUND_* with the candidate in *cand (free
 * it) and *held (nusers bytes, free it): 1 for a user whose newest event was held out and must
 * be learned by the next round, 2 for one held out of a forced round's replayed users (an old
 * event), 0 otherwise. f gets the figures either way. */
int round_run(const round_opts *o, const round_env *e, int forced, model_net *cand, uint8_t **held,
              round_figures *f);
/* The gate: ROUND_NONFINITE if m has a non-finite weight, else ROUND_PASSED if round_passes on
 * the figures it writes to f (m and serving, if any, on the newest event of the holdout users
 * hu[0..nh) of ds, and on the retained users ru[0..nret)), else ROUND_WORSE. */
int round_gate(const model_net *m, const model_net *serving, const data_set *ds, const uint32_t *hu,
               size_t nh, const uint32_t *ru, size_t nret, double margin, round_figures *f);
/* 1 if the candidate's holdout NDCG@10 is at most margin below the serving model's, and so is
 * its NDCG@10 on the retained users (if any were checked). */
int round_passes(const round_figures *f, double margin);
/* The anchor as a round sees it, with lrn's NI rows: anc itself when it has every row trained,
 * else a copy in *ext (free it) whose untrained rows and rows beyond anc->NI are lrn's. */
const model_net *round_anchor_for(const model_net *anc, const uint8_t *known, const model_net *lrn,
                                  model_net *ext);

/* ---- synthetic datasets (model/synth.c): learnable sequential structure, for tests,
 * benchmarks and `flame synth` ----
 *
 * Items are split into topics; each topic is a ring of items. A user has 1-3 tastes (topics,
 * popular topics more likely) and walks forward along the ring of its current taste, usually
 * to the very next item, sometimes skipping one or two, now and then jumping within the
 * topic, switching to another of its tastes, or picking a random popular item. A user never
 * sees an item twice (as in ml-1m), so the default protocol's exclusion of history items never
 * hides a target. The next item is thus strongly predicted by the current one (a first-order
 * model or a SASRec beats popularity by far), while popularity alone is weak. */
/* Writes a dataset of `users` lines `user item item ...` (user ids 1..users in order, item ids
 * in 1..items) to path, atomically. Lengths vary around mean_len (at least 5 items per user,
 * at most min(items, 10 * max(mean_len, 5))). The same arguments give the same file byte for byte.
 * Returns 0, FL_ERANGE for unusable sizes (users = 0, items < 5 or > 2^31-1), or -errno from
 * writing. */
int synth_write(const char *path, size_t users, size_t items, size_t mean_len, uint64_t seed);

/* See the offline training section: SASRec when anc is NULL, FLAME otherwise. */
int train_model(model_net *m, const model_net *anc, const flame_opts *fo, const data_set *ds,
                const train_opts *o, train_result *r);

#endif
