/* config/round.c: the learning part of a round from the settings (config.h). */
#include "config/config.h"
#include "model/model.h"

void config_round_opts(const config *c, round_opts *o) {
  o->steps = (size_t)c->train.steps;
  o->batch = (size_t)c->train.batch;
  o->replay = (size_t)c->train.replay_users;
  o->holdout = (size_t)c->train.holdout_users;
  o->retain = (size_t)c->train.retain_users;
  o->sampled_items = (size_t)c->train.sampled_items;
  o->negatives = (size_t)c->train.negatives;
  o->min_users = (uint64_t)c->train.min_users;
  o->lr = (float)c->train.lr;
  o->tau = (float)c->train.tau;
  o->lambda0 = (float)c->train.lambda0;
  o->lambda_r = (float)c->train.lambda_r;
  o->dropout = (float)c->model.dropout;
  o->margin = c->train.margin;
  o->new_targets = c->train.new_targets_only;
  o->seed_rows = c->train.seed_new_items;
}
