/* model/net.h: the SASRec network in stages (internal to model/).
 *
 * model_forward/model_backward (model.h) are embedding -> encoder -> tied softmax. FLAME
 * needs the stages apart: two embeddings (the learnable network's and the frozen anchor's)
 * concatenated per sample and run through both encoders under the 2x2 tiled mask, the
 * anchor's backward giving input gradients only. Each stage keeps what its backward needs in
 * a model_acts; dropout masks derive from the key a stage is given. */
#ifndef FL_MODEL_NET_H
#define FL_MODEL_NET_H

#include "model.h"

/* The rows of an encoder pass: sample b is rows off[b] .. off[b+1): nseg segments of n
 * tokens each (1 for SASRec; 2 for FLAME's [learnable embedding; anchor embedding]).
 * blockdiag: a segment attends to itself only (FLAME's ablation). tok (off[B]) marks
 * explicit padding with 0, or is NULL. */
typedef struct {
  size_t B;
  size_t nseg;
  int blockdiag;
  const size_t *off;
  const int32_t *tok;
} net_layout;

/* 1 if the batch carries explicit padding (item-0 tokens): the attention must mask them. */
int net_batch_padded(const model_batch *bt);

/* Activations for passes of up to Bmax samples, Tmax rows, nseg segments per sample (each
 * at most L rows). model_acts_new is nseg = 1. */
model_acts *net_acts_new(const model_hparams *hp, size_t Bmax, size_t Tmax, size_t nseg);

/* Dropout key of a pass from the model's seed, its step and a salt (different salts give
 * independent masks in the same step: keys far apart, as a pass's sites are key + site). */
uint64_t net_key(const model_sasrec *m, uint64_t salt);

/* (T, C) = dropout(LN_emb(item[tok] + pos[position])) for a packed batch (nseg = 1);
 * returns it (inside a). */
const float *net_embed_forward(const model_sasrec *m, model_acts *a, const model_batch *bt,
                               int train, uint64_t key);
/* Accumulates the embedding's parameter gradients into g from dX0 (T, C). */
void net_embed_backward(const model_sasrec *m, const model_tensors *g, model_acts *a,
                        const float *dx0, const model_batch *bt);

/* Blocks l0 .. l1 - 1 on X0 (lay->off[B] rows, C; read again by backward, so it must stay
 * unchanged). When l1 is the network's last block, returns the outputs at the last position
 * of every segment: (B * nseg, C), sample-major. Otherwise returns every row (T, C): the
 * input of the next range. */
const float *net_blocks_forward(const model_sasrec *m, model_acts *a, const float *X0,
                                const net_layout *lay, int train, uint64_t key, size_t l0,
                                size_t l1);
/* Backward of the last net_blocks_forward from dH, shaped like its output. Weight gradients
 * are accumulated into g unless g is NULL (a frozen network: input gradients only). Returns
 * dX0 (T, C), valid until the next pass on a. */
const float *net_blocks_backward(const model_sasrec *m, const model_tensors *g, model_acts *a,
                                 const float *dH);

/* Useful forward FLOPs of blocks l0 .. l1 - 1 over the batch's samples repeated in nseg
 * segments (multiply-add = 2; padding tokens not counted). */
double net_encoder_flops(const model_sasrec *m, const model_batch *b, size_t nseg, int blockdiag,
                         size_t l0, size_t l1);

#endif
