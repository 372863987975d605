/* common/tsan_threads.c: C11 threads routed through pthreads, in ThreadSanitizer builds only.
 *
 * Debian's librdkafka runs its threads and locks through C11 <threads.h>. glibc implements
 * thrd_create, mtx_* and cnd_* by calling its pthread functions internally, past TSan's
 * interceptors: TSan then does not know librdkafka's threads (the first allocation in one
 * crashes) and cannot see its locks (every hand-over from a librdkafka thread would look like
 * a race). Defined in the executable, these win the symbol lookup over glibc's and call the
 * intercepted pthread functions instead. glibc's thrd_t, mtx_t and cnd_t are its pthread_t,
 * pthread_mutex_t and pthread_cond_t in the same storage. CMake links this file only into
 * FLAME_SANITIZE=thread builds. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread mutex");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread condition");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");

typedef struct {
  thrd_start_t fn;
  void *arg;
} tsan_start;

static void *tsan_trampoline(void *p) {
  tsan_start s = *(tsan_start *)p;
  free(p);
  return (void *)(intptr_t)s.fn(s.arg);
}

static int tsan_code(int e) {
  return e == 0           ? thrd_success
         : e == ENOMEM    ? thrd_nomem
         : e == EBUSY     ? thrd_busy
         : e == ETIMEDOUT ? thrd_timedout
                          : thrd_error;
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg) {
  tsan_start *s = malloc(sizeof *s);
  if (!s) return thrd_nomem;
  s->fn = fn, s->arg = arg;
  int e = pthread_create((pthread_t *)thr, NULL, tsan_trampoline, s);
  if (e) free(s);
  return tsan_code(e);
}

int thrd_join(thrd_t thr, int *res) {
  void *r;
  int e = pthread_join((pthread_t)thr, &r);
  if (!e && res) *res = (int)(intptr_t)r;
  return tsan_code(e);
}

int thrd_detach(thrd_t thr) { return tsan_code(pthread_detach((pthread_t)thr)); }

int mtx_init(mtx_t *m, int type) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  if (type & mtx_recursive) pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  int e = pthread_mutex_init((pthread_mutex_t *)m, &a);
  pthread_mutexattr_destroy(&a);
  return tsan_code(e);
}
int mtx_lock(mtx_t *m) { return tsan_code(pthread_mutex_lock((pthread_mutex_t *)m)); }
int mtx_trylock(mtx_t *m) { return tsan_code(pthread_mutex_trylock((pthread_mutex_t *)m)); }
int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts) {
  return tsan_code(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}
int mtx_unlock(mtx_t *m) { return tsan_code(pthread_mutex_unlock((pthread_mutex_t *)m)); }
void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) { return tsan_code(pthread_cond_init((pthread_cond_t *)c, NULL)); }
int cnd_signal(cnd_t *c) { return tsan_code(pthread_cond_signal((pthread_cond_t *)c)); }
int cnd_broadcast(cnd_t *c) { return tsan_code(pthread_cond_broadcast((pthread_cond_t *)c)); }
int cnd_wait(cnd_t *c, mtx_t *m) {
  return tsan_code(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}
int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts) {
  return tsan_code(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}
void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }
