/* tools/internal.h: what the `flame` tool's files share (the folder's public header is
 * tools/tools.h: the embedded broker and the replayer, which tests and benchmarks use too).
 *
 *   main.c    the command table, dispatch, the top-level usage
 *   args.c    the helpers every command uses: one-line errors (exit 2), argument parsing,
 *             the shape and FLAME options, loading data, checkpoints and anchors, the JSON
 *             result line
 *   train.c   train, eval, bench
 *   ckpt.c    import-pt, init, inspect
 *   data.c    synth, broker, produce
 *   replay.c  replay: the daemon's online loop on a dataset's stream, offline
 *
 * The contract of every command: --help prints usage and exits 0; a bad argument or an
 * unreadable file prints ONE line "flame <cmd>: <what>" on stderr and exits 2; progress goes to
 * stderr; the result is the last stdout line, one JSON object. */
#ifndef FL_TOOLS_INTERNAL_H
#define FL_TOOLS_INTERNAL_H
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "model/model.h"

#define EXIT_USAGE 2

/* The command running (its name in messages). */
extern const char *tools__cmd;

/* BLAS threads when --threads is not given. One: OpenBLAS's worker threads spin between
 * calls, so on a machine whose other cores are busy (a daemon, another job) a second thread
 * slowed a step down up to 8x (a 4 s demo epoch took 60 s); on idle cores --threads 2 is
 * ~1.5x faster (bench/RESULTS.md). Ask for it where the cores are yours. */
enum { DEFAULT_THREADS = 1 };

/* Options shared by the commands that build a model. */
enum {
  OPT_DIM = 1000,
  OPT_BLOCKS,
  OPT_HEADS,
  OPT_MAXLEN,
  OPT_DROPOUT,
  OPT_NO_PACK,
  OPT_NO_LAST_ONLY,
  OPT_SGEMM,
  OPT_MEAN_LEN,
  OPT_ANCHOR,
  OPT_TAU,
  OPT_LAMBDA0,
  OPT_LAMBDAR,
  OPT_SCHEDULE,
  OPT_MASK,
  OPT_DETACH,
  OPT_INIT,
  OPT_MODULES,
  OPT_PATHS,
  OPT_ANCHOR_DROPOUT,
};

/* The FLAME settings shared by train and bench. */
typedef struct {
  flame_opts fo;
  const char *anchor;   /* --anchor FILE or NULL */
  int schedule_set;     /* --schedule given (else R = --epochs) */
  float anchor_dropout; /* --anchor-dropout P, or < 0: the anchor's checkpoint's rate */
} flame_cli;
#define FLAME_HELP                                                                                 \
  "FLAME (--method flame):\n"                                                                      \
  "  --anchor FILE    the frozen anchor (a flame checkpoint); the learnable network takes\n"       \
  "                   its shape and item table size, --dropout applies to the learnable\n"         \
  "                   network only\n"                                                              \
  "  --anchor-dropout P  the anchor's dropout in training (default: its checkpoint's\n"            \
  "                   rate, as in the paper; 0 runs it as in evaluation)\n"                        \
  "  --tau X          NT-Xent temperature (1)\n"                                                   \
  "  --lambda0 X      lambda at the start of the schedule (1)\n"                                   \
  "  --lambda-r X     lambda at its end (1e-5)\n"                                                  \
  "  --schedule N     schedule length R in epochs (--epochs)\n"                                    \
  "  --mask M         tiled (the paper) | blockdiag (independent paths, an ablation)\n"            \
  "  --detach-weights the pair weights are a stop-gradient (default: not detached)\n"              \
  "  --init I         random (the paper) | anchor (warm start from the anchor's weights)\n"        \
  "  --modules M      2 (the paper: embedding, encoder) | blocks (the embedding and every\n"       \
  "                   block are modules: 2^(1+blocks) paths)\n"                                    \
  "  --paths K        a random subset of K paths each step (default: all)\n"

/* clang-format off: one option per line reads better than what the formatter makes of it */
// clang-format off
#define FLAME_LONGOPTS                                    \
  {"anchor", required_argument, 0, OPT_ANCHOR},           \
  {"tau", required_argument, 0, OPT_TAU},                 \
  {"lambda0", required_argument, 0, OPT_LAMBDA0},         \
  {"lambda-r", required_argument, 0, OPT_LAMBDAR},        \
  {"schedule", required_argument, 0, OPT_SCHEDULE},       \
  {"mask", required_argument, 0, OPT_MASK},               \
  {"detach-weights", no_argument, 0, OPT_DETACH},         \
  {"init", required_argument, 0, OPT_INIT},               \
  {"modules", required_argument, 0, OPT_MODULES},         \
  {"paths", required_argument, 0, OPT_PATHS},             \
  {"anchor-dropout", required_argument, 0, OPT_ANCHOR_DROPOUT}
// clang-format on
#define HPARAMS_HELP                                                                               \
  "  --dim N          channels d (64); the FFN is 4d wide\n"                                       \
  "  --blocks N       transformer blocks (2)\n"                                                    \
  "  --heads N        attention heads (2)\n"                                                       \
  "  --maxlen N       max sequence length L (50)\n"                                                \
  "  --dropout P      dropout probability (0.5)\n"

#define HPARAMS_LONGOPTS                                                                           \
  {"dim", required_argument, 0, OPT_DIM}, {"blocks", required_argument, 0, OPT_BLOCKS},            \
      {"heads", required_argument, 0, OPT_HEADS}, {"maxlen", required_argument, 0, OPT_MAXLEN}, {  \
    "dropout", required_argument, 0, OPT_DROPOUT                                                   \
  }

_Noreturn void tools__die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An integer / a number in [lo, hi] for option opt, or tools__die. */
size_t tools__arg_size(const char *opt, const char *v, size_t lo, size_t hi);
double tools__arg_double(const char *opt, const char *v, double lo, double hi);
/* tools__die unless v (the value of what) is given. */
void tools__need(const char *what, const char *v);
/* getopt's unknown or incomplete option. */
void tools__bad_option(int argc, char **argv);
/* Loaders that tools__die with the loader's message. */
void tools__load_data(const char *path, data_set *ds);
/* The same with --format (NULL: auto: .inter by the name, else `user item [item ...]`). */
void tools__load_data_format(const char *path, const char *format, data_set *ds);
/* --split frac --split-by by (NULL: time when ds has timestamps, else user) into sp. */
void tools__split(const data_set *ds, double frac, const char *by, data_split *sp);
void tools__load_ckpt(const char *path, model_net *m);
/* The result line: metrics as {"HR@10":..}, a model's shape, and the printing (frees o). */
cJSON *tools__metrics_json(const eval_metrics *e);
void tools__print_json(cJSON *o);
void tools__add_model_json(cJSON *j, const model_net *m);
/* The shape options (HPARAMS_LONGOPTS): 1 when c was one; finish derives FF and checks. */
int tools__hparams_option(int c, const char *arg, model_hparams *hp);
void tools__hparams_finish(model_hparams *hp);
/* The FLAME options (FLAME_LONGOPTS): 1 when c was one. */
int tools__flame_option(int c, const char *arg, flame_cli *f);
/* --paths must not exceed the paths the modules give. */
void tools__check_paths(const flame_cli *f, const model_hparams *hp);
/* --protocol s (NULL: not given, *out unchanged). */
void tools__protocol(const char *s, eval_protocol *out);
/* --method: 1 for flame, 0 for sasrec. */
int tools__parse_method(const char *method);
void tools__set_anchor_dropout(const flame_cli *f, model_net *anc);
/* Loads the anchor for a dataset with items up to NI, at --anchor-dropout if given. */
void tools__load_anchor(const flame_cli *f, model_net *anc, size_t NI);
/* The FLAME-only options given without --method flame are refused. */
void tools__check_flame_only(const flame_cli *f, int is_flame);
/* The learnable network of a FLAME run: the anchor's shape, random or the anchor's weights. */
void tools__learnable_from_anchor(model_net *m, const model_net *anc, float dropout, int warm,
                                  uint64_t seed);

/* ---- a command's options as data (tools__parse) ---- */

typedef enum {
  TOOLS_STR,    /* const char **: the argument as given */
  TOOLS_FLAG,   /* int *: set to 1, no argument */
  TOOLS_SIZE,   /* size_t *: an integer in [lo, hi] */
  TOOLS_INT,    /* int *: the same, within int */
  TOOLS_U64,    /* uint64_t *: the same */
  TOOLS_DOUBLE, /* double *: a number in [lo, hi] */
  TOOLS_FLOAT,  /* float *: the same */
  TOOLS_LIST    /* tools__list *: every value of a repeatable option, in order */
} tools__kind;

/* The values of a repeatable option (TOOLS_LIST). */
typedef struct {
  const char *v[64];
  size_t n;
} tools__list;

/* hi of an integer option without an upper bound (SIZE_MAX). */
#define TOOLS_NO_MAX (-1.0)

/* One option --name of a command. */
typedef struct {
  const char *name; /* without the dashes */
  tools__kind kind;
  void *dst;
  double lo, hi; /* bounds of a number; TOOLS_NO_MAX: an integer up to SIZE_MAX */
} tools__opt;

/* Parses argv (argv[0] is the command) against opts[0..n), plus --help (prints help to
 * stdout; returns 1), the shape options into hp when hp is not NULL (*shape_set: one other than
 * --dropout was given) and the FLAME options into f when f is not NULL. A bad value, an unknown
 * option or a positional argument is a tools__die with the one-line messages of the contract.
 * Returns 0 when the command should run. */
int tools__parse(int argc, char **argv, const tools__opt *opts, size_t n, const char *help,
                 model_hparams *hp, int *shape_set, flame_cli *f);

/* The commands (argv[0] is the command's name). */
int tools__cmd_train(int argc, char **argv);
int tools__cmd_eval(int argc, char **argv);
int tools__cmd_bench(int argc, char **argv);
int tools__cmd_import(int argc, char **argv);
int tools__cmd_init(int argc, char **argv);
int tools__cmd_inspect(int argc, char **argv);
int tools__cmd_synth(int argc, char **argv);
int tools__cmd_broker(int argc, char **argv);
int tools__cmd_produce(int argc, char **argv);
int tools__cmd_replay(int argc, char **argv);
#endif
