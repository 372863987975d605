/* tests/utf8_ref.h: the reference UTF-8 check shared by tests/stream/test_event.c,
 * tests/common/test_common.c and the
 * fuzz target, written apart from the decoder's own range table on purpose. */
#ifndef FL_TESTS_UTF8_REF_H
#define FL_TESTS_UTF8_REF_H

#include <stddef.h>

/* Reference: decodes code points by their bit patterns and accepts only shortest forms of
 * scalar values (no surrogates, <= U+10FFFF) that are not control characters (C0 U+0000..1F,
 * DEL U+007F, C1 U+0080..9F: stream_id_check). Built differently from the decoder's range
 * table on purpose. */
static inline int ref_utf8_clean(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i]; /* 0xxxxxxx, 110xxxxx, 1110xxxx or 11110xxx, then 10xxxxxx each */
    unsigned len = c >> 7 == 0 ? 1 : c >> 5 == 6 ? 2 : c >> 4 == 14 ? 3 : c >> 3 == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return 0;
    unsigned cp = len == 1 ? c : c & (0x7fu >> len);
    for (unsigned k = 1; k < len; k++) {
      if (s[i + k] >> 6 != 2) return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    static const unsigned min_of_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_of_len[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp < 0x20 ||
        (cp >= 0x7f && cp <= 0x9f))
      return 0;
    i += len;
  }
  return 1;
}

#endif
