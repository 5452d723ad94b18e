/* Tokenizers: byte-level and GPT-2's byte-level BPE (see include/infl/tokenizer.h for the method and the files).
 *
 * Loading: rank 0 reads both files and validates them; the vocabulary (the bytes of every token, in id order) and
 * the merges (id pairs in rank order) are broadcast; every rank builds two open-addressing hash tables: token
 * bytes -> id, and (left id, right id) -> (rank, merged id).
 *
 * Encoding a pre-token: its bytes become symbols (the ids of the single-byte tokens) in a linked list; a binary
 * heap holds the adjacent pairs that have a merge rank, keyed by (rank, position).  The merge of lowest rank is
 * applied to all its occurrences left to right (the pairs it creates are pushed only after that round, so a
 * merges file whose ranks are not in creation order still gives encoder.py's result), then the next lowest, until
 * the heap is empty: O(n log n) for a pre-token of n bytes (encoder.py's loop is O(n^2)).
 */
#include "io/tokimpl.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

struct _p_InflTokenizer {
  MPI_Comm          comm;
  InflTokenizerType type;
  char              dir[PETSC_MAX_PATH_LEN]; /* BPE: the directory of the files */
  char              hash[65];
  PetscInt          V;        /* vocabulary size */
  char             *blob;     /* (offset[V]) the bytes of all tokens, in id order */
  int64_t          *offset;   /* (V+1) token id's bytes are blob[offset[id], offset[id+1]) */
  int32_t           byte_id[256];
  /* BPE */
  PetscInt   M;               /* merges */
  int32_t   *merges;          /* (M, 2) left id, right id, in rank order */
  int32_t   *tok_slots;       /* (tok_cap) token hash table: id or -1 */
  int64_t    tok_cap;
  uint64_t  *pair_keys;       /* (pair_cap) left << 32 | right, or UINT64_MAX */
  int32_t   *pair_rank;       /* (pair_cap) */
  int32_t   *pair_merged;     /* (pair_cap) */
  int64_t    pair_cap;
  pcre2_code       *re;
  pcre2_match_data *md;
  /* encoding workspace (grown as needed) */
  int32_t *sym, *prv, *nxt;   /* (wcap) symbols of the current pre-token, linked list */
  int64_t  wcap;
  struct heap_entry *heap, *pending;
  int64_t            hcap, pcap;
  /* cache of pre-tokens of at most CACHE_MAX_BYTES bytes -> their ids (emptied when full) */
  int64_t *cache_slot;        /* (CACHE_SLOTS) entry index or -1 */
  int64_t *cache_key;         /* (CACHE_ENTRIES + 1) entry e's bytes are cache_bytes[cache_key[e], cache_key[e+1]) */
  int64_t *cache_val;         /* (CACHE_ENTRIES + 1) entry e's ids are cache_ids[cache_val[e], cache_val[e+1]) */
  char    *cache_bytes;       /* (CACHE_ENTRIES * CACHE_MAX_BYTES) */
  int32_t *cache_ids;         /* (CACHE_ENTRIES * CACHE_MAX_BYTES) */
  int64_t  cache_n;
};

#define CACHE_SLOTS     ((int64_t)1 << 16)
#define CACHE_ENTRIES   (CACHE_SLOTS / 2)
#define CACHE_MAX_BYTES 32

typedef struct heap_entry {
  int32_t rank, pos;
} HeapEntry;

/* ---------------------------------------------------------------- small helpers */

PetscErrorCode InflReadFile_Private(const char path[], char **buf, size_t *len)
{
  FILE  *f = fopen(path, "rb");
  long   size;
  size_t got;

  PetscFunctionBegin;
  *buf = NULL;
  *len = 0;
  PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot open %s: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "cannot determine the size of %s (not a regular file?)", path);
  }
  PetscCall(PetscMalloc1((size_t)size + 1, buf));
  got = fread(*buf, 1, (size_t)size, f);
  fclose(f);
  PetscCheck(got == (size_t)size, PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "error reading %s: %zu of %ld bytes", path, got, size);
  (*buf)[size] = 0;
  *len         = (size_t)size;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIdBufReserve_Private(InflIdBuf *b, int64_t extra)
{
  PetscFunctionBegin;
  if (b->n + extra > b->cap) {
    int64_t  cap = PetscMax(2 * b->cap, b->n + extra + 64);
    int32_t *ids;
    PetscCall(PetscMalloc1(cap, &ids));
    if (b->n) PetscCall(PetscArraycpy(ids, b->ids, b->n));
    PetscCall(PetscFree(b->ids));
    b->ids = ids;
    b->cap = cap;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflUTF8Check(const char text[], size_t len, int64_t *bad, const char **reason)
{
  const unsigned char *s = (const unsigned char *)text;
  size_t               i = 0;
  const char          *why = NULL;

  PetscFunctionBegin;
  *bad = -1;
  while (i < len) {
    unsigned c = s[i], need, cp, min;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) need = 1, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) need = 2, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) need = 3, cp = c & 0x07, min = 0x10000;
    else {
      why = (c & 0xC0) == 0x80 ? "a continuation byte without a lead byte" : "a byte that never occurs in UTF-8";
      break;
    }
    if (i + need >= len) {
      why = "a sequence cut short by the end of the text";
      break;
    }
    {
      unsigned k;
      for (k = 1; k <= need; k++) {
        if ((s[i + k] & 0xC0) != 0x80) break;
        cp = (cp << 6) | (s[i + k] & 0x3F);
      }
      if (k <= need) {
        why = "a sequence cut short (a lead byte not followed by enough continuation bytes)";
        break;
      }
    }
    if (cp < min) {
      why = "an overlong encoding";
      break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) {
      why = "a UTF-16 surrogate (U+D800..U+DFFF)";
      break;
    }
    if (cp > 0x10FFFF) {
      why = "a code point above U+10FFFF";
      break;
    }
    i += need + 1;
  }
  if (why) *bad = (int64_t)i;
  if (reason) *reason = why;
  PetscFunctionReturn(0);
}

/* GPT-2's bytes_to_unicode(): byte -> code point. */
static unsigned byte_to_cp(unsigned b)
{
  unsigned n = 0;
  if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
  for (unsigned x = 0; x < b; x++)
    if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
  return 256 + n;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

static int64_t table_capacity(int64_t n)
{
  int64_t c = 16;
  while (c < 2 * n) c *= 2;
  return c;
}

/* Token id of bytes s[0..n), or -1. */
static int32_t token_lookup(InflTokenizer t, const char *s, size_t n)
{
  uint64_t mask = (uint64_t)t->tok_cap - 1, i = hash_bytes(s, n) & mask;
  for (;; i = (i + 1) & mask) {
    int32_t id = t->tok_slots[i];
    if (id < 0) return -1;
    if ((size_t)(t->offset[id + 1] - t->offset[id]) == n && !memcmp(t->blob + t->offset[id], s, n)) return id;
  }
}

/* Insert token id; returns the id already holding the same bytes, or -1. */
static int32_t token_insert(InflTokenizer t, int32_t id)
{
  const char *s    = t->blob + t->offset[id];
  size_t      n    = (size_t)(t->offset[id + 1] - t->offset[id]);
  uint64_t    mask = (uint64_t)t->tok_cap - 1, i = hash_bytes(s, n) & mask;
  for (;; i = (i + 1) & mask) {
    int32_t other = t->tok_slots[i];
    if (other < 0) {
      t->tok_slots[i] = id;
      return -1;
    }
    if ((size_t)(t->offset[other + 1] - t->offset[other]) == n && !memcmp(t->blob + t->offset[other], s, n)) return other;
  }
}

/* Slot of pair (l, r): its own if present, else the empty slot where it goes. */
static int64_t pair_slot(InflTokenizer t, int32_t l, int32_t r)
{
  uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r, mask = (uint64_t)t->pair_cap - 1, i = hash_u64(key) & mask;
  for (;; i = (i + 1) & mask)
    if (t->pair_keys[i] == key || t->pair_keys[i] == UINT64_MAX) return (int64_t)i;
}

static int32_t pair_rank(InflTokenizer t, int32_t l, int32_t r, int32_t *merged)
{
  int64_t s = pair_slot(t, l, r);
  if (t->pair_keys[s] == UINT64_MAX) return -1;
  if (merged) *merged = t->pair_merged[s];
  return t->pair_rank[s];
}

/* ---------------------------------------------------------------- reading the files (rank 0) */

/* Append the bytes of a vocabulary string (code points of the byte-to-unicode map, UTF-8) to out; *n bytes.
 * Returns the first code point outside the map, or 0 if all are inside. */
static unsigned unmap_token(const char *s, size_t len, const int *cp_to_byte, char *out, size_t *n)
{
  const unsigned char *u = (const unsigned char *)s;
  size_t               i = 0;
  *n = 0;
  while (i < len) {
    unsigned cp;
    if (u[i] < 0x80) cp = u[i++];
    else if ((u[i] & 0xE0) == 0xC0 && i + 1 < len) cp = ((u[i] & 0x1Fu) << 6) | (u[i + 1] & 0x3Fu), i += 2;
    else if ((u[i] & 0xF0) == 0xE0 && i + 2 < len) cp = ((u[i] & 0x0Fu) << 12) | ((u[i + 1] & 0x3Fu) << 6) | (u[i + 2] & 0x3Fu), i += 3;
    else return 0x110000; /* 4-byte sequences are never in the map */
    if (cp >= 324 || cp_to_byte[cp] < 0) return cp ? cp : 0x110001;
    out[(*n)++] = (char)cp_to_byte[cp];
  }
  return 0;
}

static void cp_name(unsigned cp, char buf[32])
{
  if (cp == 0x110000) snprintf(buf, 32, "a 4-byte character");
  else if (cp == 0x110001) snprintf(buf, 32, "U+0000");
  else snprintf(buf, 32, "U+%04X", cp);
}

/* Vocabulary JSON -> t->V, t->blob, t->offset.  Errors name the file and the entry. */
static PetscErrorCode read_vocab(InflTokenizer t, const char path[], InflHash h, const int *cp_to_byte)
{
  char        *text;
  size_t       len, total = 0;
  json_t      *root, *val;
  json_error_t jerr;
  const char  *key;
  const char **keys; /* (V) the entry of each id */
  PetscInt     V;

  PetscFunctionBegin;
  PetscCall(InflReadFile_Private(path, &text, &len));
  PetscCall(InflHashUpdate(h, &len, sizeof(len)));
  PetscCall(InflHashUpdate(h, text, len));
  root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  PetscCall(PetscFree(text));
  PetscCheck(root, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: line %d, column %d: %s; the vocabulary must be a JSON object {\"token\": id, ...}", path, jerr.line, jerr.column, jerr.text);
  if (!json_is_object(root) || json_object_size(root) == 0) {
    json_decref(root);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: not a non-empty JSON object {\"token\": id, ...}; is this a GPT-2 vocabulary (vocab.json / encoder.json)?", path);
  }
  if (json_object_size(root) > 100000000) {
    json_decref(root);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: %zu entries, more than 10^8; the file is not a vocabulary", path, json_object_size(root));
  }
  V = (PetscInt)json_object_size(root);
  PetscCall(PetscCalloc1(V, &keys));
  json_object_foreach(root, key, val)
  {
    json_int_t     id = json_is_integer(val) ? json_integer_value(val) : -1;
    PetscErrorCode e  = 0;
    if (!json_is_integer(val)) e = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_FILE_UNEXPECTED, PETSC_ERROR_INITIAL, "%s: entry \"%.200s\": the id is not an integer; the vocabulary maps token strings to integer ids", path, key);
    else if (id < 0 || id >= V) e = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_FILE_UNEXPECTED, PETSC_ERROR_INITIAL, "%s: entry \"%.200s\": id %lld is outside [0, %" PetscInt_FMT "); the ids of V = %" PetscInt_FMT " entries must be exactly 0..V-1", path, key, (long long)id, V, V);
    else if (keys[id]) e = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_FILE_UNEXPECTED, PETSC_ERROR_INITIAL, "%s: entries \"%.200s\" and \"%.200s\" have the same id %lld; ids must be exactly 0..V-1, each once", path, keys[id], key, (long long)id);
    if (e) {
      PetscCall(PetscFree(keys));
      json_decref(root);
      return e;
    }
    keys[id] = key;
    total += strlen(key);
  }
  /* V entries with distinct ids in [0, V): dense.  Token bytes: at most as many as the key's UTF-8 bytes. */
  t->V = V;
  PetscCall(PetscMalloc1(total + 1, &t->blob));
  PetscCall(PetscMalloc1(V + 1, &t->offset));
  t->offset[0] = 0;
  for (PetscInt id = 0; id < V; id++) {
    size_t   n;
    unsigned bad = unmap_token(keys[id], strlen(keys[id]), cp_to_byte, t->blob + t->offset[id], &n);
    if (bad || n == 0) {
      char           cps[32];
      PetscErrorCode e;
      cp_name(bad, cps);
      if (bad) e = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_FILE_UNEXPECTED, PETSC_ERROR_INITIAL, "%s: entry \"%.200s\" (id %" PetscInt_FMT "): %s is not in GPT-2's byte-to-unicode map; this is not a byte-level BPE vocabulary", path, keys[id], id, cps);
      else e = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_FILE_UNEXPECTED, PETSC_ERROR_INITIAL, "%s: entry with id %" PetscInt_FMT " is the empty string; tokens have at least one byte", path, id);
      PetscCall(PetscFree(keys));
      json_decref(root);
      return e;
    }
    t->offset[id + 1] = t->offset[id] + (int64_t)n;
  }
  PetscCall(PetscFree(keys));
  json_decref(root);
  PetscFunctionReturn(0);
}

/* Token hash table and byte ids from t->blob / t->offset; duplicate token bytes are an error naming both ids
 * (vocab_path non-NULL on rank 0 only, where the check happens first). */
static PetscErrorCode build_token_table(InflTokenizer t, const char vocab_path[])
{
  PetscFunctionBegin;
  t->tok_cap = table_capacity(t->V);
  PetscCall(PetscMalloc1(t->tok_cap, &t->tok_slots));
  for (int64_t i = 0; i < t->tok_cap; i++) t->tok_slots[i] = -1;
  for (PetscInt id = 0; id < t->V; id++) {
    int32_t other = token_insert(t, (int32_t)id);
    PetscCheck(other < 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: ids %d and %" PetscInt_FMT " are the same token (%" PRId64 " bytes \"%.*s\" after undoing the byte-to-unicode map); every token must appear once", vocab_path ? vocab_path : "vocabulary", other, id, t->offset[id + 1] - t->offset[id], (int)PetscMin(100, t->offset[id + 1] - t->offset[id]), t->blob + t->offset[id]);
  }
  for (int b = 0; b < 256; b++) {
    char c = (char)b;
    t->byte_id[b] = token_lookup(t, &c, 1);
    PetscCheck(t->byte_id[b] >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: no token for the single byte 0x%02X (code point U+%04X); a byte-level BPE vocabulary has a token for every byte", vocab_path ? vocab_path : "vocabulary", b, byte_to_cp((unsigned)b));
  }
  PetscFunctionReturn(0);
}

/* Insert merge m (rank m) into the pair table; error if the pair is there already or its result is no token. */
static PetscErrorCode pair_insert(InflTokenizer t, PetscInt m, const char merges_path[], const int64_t *line_of)
{
  int32_t l = t->merges[2 * m], r = t->merges[2 * m + 1], merged;
  int64_t s  = pair_slot(t, l, r);
  size_t  nl = (size_t)(t->offset[l + 1] - t->offset[l]), nr = (size_t)(t->offset[r + 1] - t->offset[r]);
  char    buf[512];

  PetscFunctionBegin;
  PetscCheck(t->pair_keys[s] == UINT64_MAX, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: line %" PRId64 ": the merge of tokens %d and %d repeats line %" PRId64 "; each merge must appear once", merges_path ? merges_path : "merges", line_of ? line_of[m] : (int64_t)m, l, r, line_of ? line_of[t->pair_rank[s]] : (int64_t)t->pair_rank[s]);
  merged = -1;
  if (nl + nr <= sizeof(buf)) {
    PetscCall(PetscMemcpy(buf, t->blob + t->offset[l], nl));
    PetscCall(PetscMemcpy(buf + nl, t->blob + t->offset[r], nr));
    merged = token_lookup(t, buf, nl + nr);
  }
  PetscCheck(merged >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: line %" PRId64 ": the merge of tokens %d and %d gives \"%.*s%.*s\", which is not in the vocabulary; the merges and vocabulary files do not belong together", merges_path ? merges_path : "merges", line_of ? line_of[m] : (int64_t)m, l, r, (int)PetscMin(nl, 100), t->blob + t->offset[l], (int)PetscMin(nr, 100), t->blob + t->offset[r]);
  t->pair_keys[s]   = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
  t->pair_rank[s]   = (int32_t)m;
  t->pair_merged[s] = merged;
  PetscFunctionReturn(0);
}

static PetscErrorCode build_pair_table(InflTokenizer t, const char merges_path[], const int64_t *line_of)
{
  PetscFunctionBegin;
  t->pair_cap = table_capacity(t->M);
  PetscCall(PetscMalloc3(t->pair_cap, &t->pair_keys, t->pair_cap, &t->pair_rank, t->pair_cap, &t->pair_merged));
  for (int64_t i = 0; i < t->pair_cap; i++) t->pair_keys[i] = UINT64_MAX;
  for (PetscInt m = 0; m < t->M; m++) PetscCall(pair_insert(t, m, merges_path, line_of));
  PetscFunctionReturn(0);
}

/* Merges text -> t->M, t->merges (needs the token table).  Errors name the file and the line. */
static PetscErrorCode read_merges(InflTokenizer t, const char path[], InflHash h, const int *cp_to_byte)
{
  char    *text, *line;
  size_t   len, pos = 0;
  int64_t  lineno = 0, nlines = 1, *line_of; /* (M) file line of each merge */
  PetscInt M      = 0;
  char    *tok;   /* (len) scratch for unmapped token bytes */

  PetscFunctionBegin;
  PetscCall(InflReadFile_Private(path, &text, &len));
  PetscCall(InflHashUpdate(h, &len, sizeof(len)));
  PetscCall(InflHashUpdate(h, text, len));
  {
    int64_t     bad;
    const char *why;
    PetscCall(InflUTF8Check(text, len, &bad, &why));
    if (bad >= 0) {
      int64_t l = 1;
      for (int64_t i = 0; i < bad; i++) l += text[i] == '\n';
      PetscCall(PetscFree(text));
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: line %" PRId64 ": invalid UTF-8 at byte offset %" PRId64 " (%s); a merges file is UTF-8 text", path, l, bad, why);
    }
  }
  for (size_t i = 0; i < len; i++) nlines += text[i] == '\n';
  PetscCall(PetscMalloc1(2 * nlines, &t->merges));
  PetscCall(PetscMalloc1(nlines, &line_of));
  PetscCall(PetscMalloc1(len + 1, &tok));
  while (pos < len) {
    size_t end = pos, ll, sp, n[2];
    int32_t id[2];
    line = text + pos;
    while (end < len && text[end] != '\n') end++;
    ll = end - pos;
    pos = end + 1;
    lineno++;
    if (ll && line[ll - 1] == '\r') ll--;
    if (ll == 0 || (lineno == 1 && ll >= 8 && !strncmp(line, "#version", 8))) continue;
    for (sp = 0; sp < ll && line[sp] != ' '; sp++) {}
    if (!(sp > 0 && sp + 1 < ll && !memchr(line + sp + 1, ' ', ll - sp - 1) && !memchr(line, '\t', ll))) {
      PetscErrorCode e = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_FILE_UNEXPECTED, PETSC_ERROR_INITIAL, "%s: line %" PRId64 ": \"%.*s\" is not two tokens separated by one space; a merges file has one merge \"left right\" per line", path, lineno, (int)PetscMin(ll, 200), line);
      PetscCall(PetscFree(tok));
      PetscCall(PetscFree(line_of));
      PetscCall(PetscFree(text));
      return e;
    }
    for (int k = 0; k < 2; k++) {
      const char *s  = k ? line + sp + 1 : line;
      size_t      sl = k ? ll - sp - 1 : sp;
      unsigned    bad = unmap_token(s, sl, cp_to_byte, tok, &n[k]);
      id[k]           = bad ? -1 : token_lookup(t, tok, n[k]);
      if (id[k] < 0) {
        char           cps[32];
        PetscErrorCode e;
        cp_name(bad, cps);
        e = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_FILE_UNEXPECTED, PETSC_ERROR_INITIAL, bad ? "%s: line %" PRId64 ": %s token \"%.*s\": %s is not in GPT-2's byte-to-unicode map" : "%s: line %" PRId64 ": %s token \"%.*s\" is not in the vocabulary%s; the merges and vocabulary files do not belong together", path, lineno, k ? "right" : "left", (int)PetscMin(sl, 200), s, bad ? cps : "");
        PetscCall(PetscFree(tok));
        PetscCall(PetscFree(line_of));
        PetscCall(PetscFree(text));
        return e;
      }
    }
    t->merges[2 * M]     = id[0];
    t->merges[2 * M + 1] = id[1];
    line_of[M++]         = lineno;
  }
  PetscCall(PetscFree(tok));
  PetscCall(PetscFree(text));
  t->M = M;
  {
    PetscErrorCode e;
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    e = build_pair_table(t, path, line_of);
    PetscCall(PetscPopErrorHandler());
    PetscCall(PetscFree(line_of));
    PetscCall(e);
  }
  PetscFunctionReturn(0);
}

/* The error of a tokenizer directory without a complete pair of files: what is there, what is missing, the fix. */
static PetscErrorCode bpe_files_missing(const char dir[])
{
  static const char *names[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
  const char        *fix = "give the directory of a GPT-2 tokenizer (GPT-2's own files: tests/tok/fetch_gpt2.sh DIR, see INSTALL)";
  struct stat        st;
  char               a[PETSC_MAX_PATH_LEN], b[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  if (stat(dir, &st) != 0) SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "tokenizer directory %s: %s; %s", dir, strerror(errno), fix);
  PetscCheck(S_ISDIR(st.st_mode), PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "tokenizer directory %s is not a directory; %s", dir, fix);
  for (int k = 0; k < 2; k++) {
    PetscBool ha, hb;
    PetscCall(PetscSNPrintf(a, sizeof(a), "%s/%s", dir, names[k][0]));
    PetscCall(PetscSNPrintf(b, sizeof(b), "%s/%s", dir, names[k][1]));
    ha = InflFileExists(a);
    hb = InflFileExists(b);
    PetscCheck(ha == hb, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "tokenizer directory %s holds %s but not %s, which goes with it; %s", dir, names[k][ha ? 0 : 1], names[k][ha ? 1 : 0], fix);
  }
  SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "tokenizer directory %s holds neither vocab.json + merges.txt (Hugging Face) nor encoder.json + vocab.bpe (openai/gpt-2); %s", dir, fix);
}

/* Rank 0: find, read and check both files; fills V, blob, offset, tables, M, merges, hash. */
static PetscErrorCode bpe_read(InflTokenizer t, const char dir[])
{
  static const char *names[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
  char               vpath[PETSC_MAX_PATH_LEN], mpath[PETSC_MAX_PATH_LEN];
  int                cp_to_byte[324], found = -1;
  InflHash           h;

  PetscFunctionBegin;
  for (int k = 0; k < 2 && found < 0; k++) {
    PetscCall(PetscSNPrintf(vpath, sizeof(vpath), "%s/%s", dir, names[k][0]));
    PetscCall(PetscSNPrintf(mpath, sizeof(mpath), "%s/%s", dir, names[k][1]));
    if (InflFileExists(vpath) && InflFileExists(mpath)) found = k;
  }
  if (found < 0) PetscCall(bpe_files_missing(dir));
  for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
  for (unsigned b = 0; b < 256; b++) cp_to_byte[byte_to_cp(b)] = (int)b;
  PetscCall(InflHashCreate(&h));
  PetscCall(read_vocab(t, vpath, h, cp_to_byte));
  PetscCall(build_token_table(t, vpath));
  PetscCall(read_merges(t, mpath, h, cp_to_byte));
  PetscCall(InflHashFinal(&h, t->hash));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- public */

PetscErrorCode InflTokenizerCreate(MPI_Comm comm, InflTokenizer *t)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(t));
  (*t)->comm = comm;
  (*t)->type = INFL_TOKENIZER_NONE;
  PetscFunctionReturn(0);
}

static PetscErrorCode tokenizer_reset(InflTokenizer t)
{
  PetscFunctionBegin;
  PetscCall(PetscFree(t->blob));
  PetscCall(PetscFree(t->offset));
  PetscCall(PetscFree(t->merges));
  PetscCall(PetscFree(t->tok_slots));
  PetscCall(PetscFree3(t->pair_keys, t->pair_rank, t->pair_merged));
  PetscCall(PetscFree3(t->sym, t->prv, t->nxt));
  PetscCall(PetscFree(t->heap));
  PetscCall(PetscFree(t->pending));
  PetscCall(PetscFree5(t->cache_slot, t->cache_key, t->cache_val, t->cache_bytes, t->cache_ids));
  t->cache_n = 0;
  if (t->md) pcre2_match_data_free(t->md);
  if (t->re) pcre2_code_free(t->re);
  t->md = NULL;
  t->re = NULL;
  t->wcap = t->hcap = t->pcap = 0;
  t->V = t->M = 0;
  t->type     = INFL_TOKENIZER_NONE;
  t->dir[0]   = 0;
  t->hash[0]  = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerSetType(InflTokenizer t, InflTokenizerType type)
{
  InflHash h;

  PetscFunctionBegin;
  PetscCheck(type == INFL_TOKENIZER_BYTE, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "InflTokenizerSetType: only INFL_TOKENIZER_BYTE can be set directly; a BPE tokenizer is made from its files by InflTokenizerLoad(t, dir)");
  PetscCall(tokenizer_reset(t));
  t->type = INFL_TOKENIZER_BYTE;
  t->V    = 256;
  PetscCall(PetscMalloc1(256, &t->blob));
  PetscCall(PetscMalloc1(257, &t->offset));
  for (int b = 0; b <= 256; b++) t->offset[b] = b;
  for (int b = 0; b < 256; b++) t->blob[b] = (char)b, t->byte_id[b] = b;
  PetscCall(InflHashCreate(&h));
  PetscCall(InflHashUpdate(h, "byte", 4));
  PetscCall(InflHashFinal(&h, t->hash));
  PetscFunctionReturn(0);
}

/* GPT-2's pattern with \s spelled out as Unicode White_Space (see the header). */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

static PetscErrorCode compile_pattern(InflTokenizer t)
{
  int        err;
  PCRE2_SIZE off;

  PetscFunctionBegin;
  t->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
  if (!t->re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_LIB, "PCRE2 cannot compile GPT-2's pre-tokenization pattern at offset %zu: %s (PCRE2 built without Unicode support?)", (size_t)off, (char *)msg);
  }
  (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional: the interpreter is used where JIT is missing */
  t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
  PetscCheck(t->md, PETSC_COMM_SELF, PETSC_ERR_MEM, "PCRE2 cannot allocate match data");
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerLoad(InflTokenizer t, const char dir[])
{
  PetscMPIInt    rank;
  int64_t        sizes[3];
  PetscErrorCode e = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(t->comm, &rank));
  PetscCall(tokenizer_reset(t));
  if (rank == 0) {
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    e = bpe_read(t, dir);
    PetscCall(PetscPopErrorHandler());
    if (e) PetscCall(tokenizer_reset(t)); /* a failed Load leaves no half-read tables */
  }
  PetscCall(InflAgreeError_Private(t->comm, e, __LINE__, PETSC_FUNCTION_NAME, __FILE__));
  sizes[0] = t->V;
  sizes[1] = t->V ? t->offset[t->V] : 0;
  sizes[2] = t->M;
  PetscCall(InflBcast(sizes, 3, MPI_INT64_T, 0, t->comm));
  if (rank != 0) {
    t->V = (PetscInt)sizes[0];
    t->M = (PetscInt)sizes[2];
    PetscCall(PetscMalloc1(sizes[1] + 1, &t->blob));
    PetscCall(PetscMalloc1(t->V + 1, &t->offset));
    PetscCall(PetscMalloc1(2 * t->M + 1, &t->merges));
  }
  PetscCall(InflBcast(t->blob, sizes[1], MPI_CHAR, 0, t->comm));
  PetscCall(InflBcast(t->offset, t->V + 1, MPI_INT64_T, 0, t->comm));
  PetscCall(InflBcast(t->merges, 2 * (int64_t)t->M, MPI_INT32_T, 0, t->comm));
  PetscCall(InflBcast(t->hash, 65, MPI_CHAR, 0, t->comm));
  if (rank != 0) { /* the same tables as rank 0 built while checking, so no error can occur here */
    PetscCall(build_token_table(t, NULL));
    PetscCall(build_pair_table(t, NULL, NULL));
  }
  InflCallAll(t->comm, compile_pattern(t));
  PetscCall(PetscStrncpy(t->dir, dir, sizeof(t->dir)));
  t->type = INFL_TOKENIZER_BPE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerCheckVocabSize(InflTokenizer t, PetscInt vocab_size)
{
  PetscInt padded = (t->V + 127) / 128 * 128;

  PetscFunctionBegin;
  PetscCheck(t->type != INFL_TOKENIZER_NONE, PETSC_COMM_SELF, PETSC_ERR_ORDER, "the tokenizer has no kind yet; call InflTokenizerSetType or InflTokenizerLoad first");
  PetscCheck(vocab_size == t->V || (vocab_size > t->V && vocab_size <= padded), PETSC_COMM_SELF, PETSC_ERR_ARG_INCOMP, "the model's vocab_size %" PetscInt_FMT " does not fit the %s tokenizer%s%s of %" PetscInt_FMT " tokens (the model may have at most %" PetscInt_FMT ", the vocabulary padded to a multiple of 128, and at least %" PetscInt_FMT "); give the model's own tokenizer files", vocab_size, t->type == INFL_TOKENIZER_BYTE ? "byte-level" : "BPE", t->dir[0] ? " from " : "", t->dir, t->V, padded, t->V);
  PetscFunctionReturn(0);
}

/* Copy file `from` to `to` through to.tmp (rank 0's work of InflTokenizerCopyFiles). */
static PetscErrorCode copy_file(const char from[], const char to[])
{
  char   tmp[PETSC_MAX_PATH_LEN], buf[65536];
  FILE  *in, *out;
  size_t n;
  int    bad;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.tmp", to));
  in = fopen(from, "rb");
  PetscCheck(in, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot read tokenizer file %s: %s", from, strerror(errno));
  out = fopen(tmp, "wb");
  if (!out) {
    int e = errno;
    fclose(in);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot write %s (copying the tokenizer file %s beside the model): %s", tmp, from, strerror(e));
  }
  while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
    if (fwrite(buf, 1, n, out) != n) break;
  bad = ferror(in) || ferror(out);
  bad |= fclose(out) != 0;
  fclose(in);
  if (!bad && rename(tmp, to) != 0) bad = 1;
  if (bad) remove(tmp);
  PetscCheck(!bad, PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE, "copying the tokenizer file %s to %s failed: %s", from, to, strerror(errno));
  PetscFunctionReturn(0);
}

static PetscErrorCode copy_files(const char dir[], const char dest[])
{
  static const char *names[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
  char               from[PETSC_MAX_PATH_LEN], to[PETSC_MAX_PATH_LEN], other[PETSC_MAX_PATH_LEN];
  int                found = -1;

  PetscFunctionBegin;
  for (int k = 0; k < 2 && found < 0; k++) {
    PetscCall(PetscSNPrintf(from, sizeof(from), "%s/%s", dir, names[k][0]));
    PetscCall(PetscSNPrintf(other, sizeof(other), "%s/%s", dir, names[k][1]));
    if (InflFileExists(from) && InflFileExists(other)) found = k;
  }
  if (found < 0) PetscCall(bpe_files_missing(dir));
  for (int i = 0; i < 2; i++) {
    PetscCall(PetscSNPrintf(from, sizeof(from), "%s/%s", dir, names[found][i]));
    PetscCall(PetscSNPrintf(to, sizeof(to), "%s/%s", dest, names[found][i]));
    PetscCall(copy_file(from, to));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerCopyFiles(MPI_Comm comm, const char dir[], const char dest[])
{
  PetscMPIInt rank;

  PetscFunctionBegin;
  if (!dir || !dir[0]) PetscFunctionReturn(0);
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  InflCallAll(comm, rank == 0 ? copy_files(dir, dest) : 0);
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerFilesIn(MPI_Comm comm, const char dir[], PetscBool *found)
{
  PetscFunctionBegin;
  *found = PETSC_FALSE;
  if (dir && dir[0]) {
    char a[PETSC_MAX_PATH_LEN], b[PETSC_MAX_PATH_LEN], c[PETSC_MAX_PATH_LEN], d[PETSC_MAX_PATH_LEN];
    PetscCall(PetscSNPrintf(a, sizeof(a), "%s/vocab.json", dir));
    PetscCall(PetscSNPrintf(b, sizeof(b), "%s/merges.txt", dir));
    PetscCall(PetscSNPrintf(c, sizeof(c), "%s/encoder.json", dir));
    PetscCall(PetscSNPrintf(d, sizeof(d), "%s/vocab.bpe", dir));
    *found = (InflFileExists(a) && InflFileExists(b)) || (InflFileExists(c) && InflFileExists(d)) ? PETSC_TRUE : PETSC_FALSE;
    /* the directory is seen alike by every rank on a shared file system; agree anyway */
    PetscCallMPI(MPI_Bcast(found, 1, MPIU_BOOL, 0, comm));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerSetUpForModel(InflTokenizer t, const char dir[], PetscInt vocab_size)
{
  PetscBool files;

  PetscFunctionBegin;
  PetscCall(InflTokenizerFilesIn(t->comm, dir, &files));
  if (files) PetscCall(InflTokenizerLoad(t, dir));
  else {
    PetscCheck(vocab_size == 256, t->comm, PETSC_ERR_FILE_OPEN, "the model has vocab_size %" PetscInt_FMT " but %s%s holds no tokenizer files (vocab.json + merges.txt or encoder.json + vocab.bpe); only a model of vocab_size 256 can use the byte-level tokenizer without files", vocab_size, dir && dir[0] ? "the directory " : "no tokenizer directory was given", dir && dir[0] ? dir : "");
    PetscCall(InflTokenizerSetType(t, INFL_TOKENIZER_BYTE));
  }
  PetscCall(InflTokenizerCheckVocabSize(t, vocab_size));
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerGetType(InflTokenizer t, InflTokenizerType *type)
{
  PetscFunctionBegin;
  *type = t->type;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerGetVocabSize(InflTokenizer t, PetscInt *V)
{
  PetscFunctionBegin;
  *V = t->V;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerGetHash(InflTokenizer t, const char **hex)
{
  PetscFunctionBegin;
  *hex = t->hash;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerGetToken(InflTokenizer t, int32_t id, const char **bytes, size_t *len)
{
  PetscFunctionBegin;
  PetscCheck(id >= 0 && id < t->V, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "token id %d is outside [0, %" PetscInt_FMT ")", (int)id, t->V);
  *bytes = t->blob + t->offset[id];
  *len   = (size_t)(t->offset[id + 1] - t->offset[id]);
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- BPE of one pre-token */

static inline int heap_less(HeapEntry a, HeapEntry b)
{
  return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(HeapEntry *h, int64_t *n, HeapEntry e)
{
  int64_t i = (*n)++;
  while (i > 0) {
    int64_t p = (i - 1) / 2;
    if (!heap_less(e, h[p])) break;
    h[i] = h[p];
    i    = p;
  }
  h[i] = e;
}

static HeapEntry heap_pop(HeapEntry *h, int64_t *n)
{
  HeapEntry top = h[0], last = h[--(*n)];
  int64_t   i = 0;
  for (;;) {
    int64_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
    if (!heap_less(h[c], last)) break;
    h[i] = h[c];
    i    = c;
  }
  if (*n > 0) h[i] = last;
  return top;
}

static PetscErrorCode workspace(InflTokenizer t, int64_t n)
{
  PetscFunctionBegin;
  if (n > t->wcap) {
    int64_t cap = PetscMax(n, 2 * t->wcap);
    PetscCall(PetscFree3(t->sym, t->prv, t->nxt));
    PetscCall(PetscFree(t->heap));
    PetscCall(PetscFree(t->pending));
    PetscCall(PetscMalloc3(cap, &t->sym, cap, &t->prv, cap, &t->nxt));
    PetscCall(PetscMalloc1(3 * cap, &t->heap)); /* n initial pairs + 2 per merge */
    PetscCall(PetscMalloc1(2 * cap, &t->pending));
    t->wcap = cap;
  }
  PetscFunctionReturn(0);
}

/* The pair starting at symbol p, if it has a rank: into the buffer h (a heap if push_heap). */
static inline void candidate(InflTokenizer t, int32_t p, HeapEntry *h, int64_t *n, int push_heap)
{
  int32_t q = p >= 0 ? t->nxt[p] : -1, r;
  if (p < 0 || q < 0) return;
  r = pair_rank(t, t->sym[p], t->sym[q], NULL);
  if (r < 0) return;
  if (push_heap) heap_push(h, n, (HeapEntry){r, p});
  else h[(*n)++] = (HeapEntry){r, p};
}

static PetscErrorCode bpe_word(InflTokenizer t, const unsigned char *s, int64_t n, InflIdBuf *out)
{
  int64_t nh = 0, np;

  PetscFunctionBegin;
  PetscCall(InflIdBufReserve_Private(out, n));
  if (n == 1) {
    out->ids[out->n++] = t->byte_id[s[0]];
    PetscFunctionReturn(0);
  }
  PetscCall(workspace(t, n));
  for (int64_t i = 0; i < n; i++) {
    t->sym[i] = t->byte_id[s[i]];
    t->prv[i] = (int32_t)i - 1;
    t->nxt[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  }
  for (int64_t i = 0; i + 1 < n; i++) candidate(t, (int32_t)i, t->heap, &nh, 1);
  while (nh > 0) {
    int32_t rank = t->heap[0].rank;
    np           = 0;
    while (nh > 0 && t->heap[0].rank == rank) { /* one round: every occurrence of this pair, left to right */
      HeapEntry e = heap_pop(t->heap, &nh);
      int32_t   p = e.pos, q = t->nxt[p], merged = -1, r;
      if (t->sym[p] < 0 || q < 0) continue; /* stale: p was absorbed, or has no right neighbour any more */
      r = pair_rank(t, t->sym[p], t->sym[q], &merged);
      if (r != rank) continue;              /* stale: a neighbour changed */
      t->sym[p] = merged;
      t->sym[q] = -1;
      t->nxt[p] = t->nxt[q];
      if (t->nxt[q] >= 0) t->prv[t->nxt[q]] = p;
      candidate(t, t->prv[p], t->pending, &np, 0);
      candidate(t, p, t->pending, &np, 0);
    }
    for (int64_t k = 0; k < np; k++) heap_push(t->heap, &nh, t->pending[k]);
  }
  for (int32_t p = 0; p >= 0; p = t->nxt[p]) out->ids[out->n++] = t->sym[p];
  PetscFunctionReturn(0);
}

/* BPE of a pre-token through the cache: a pre-token seen before gets its stored ids (encoder.py keeps such a
 * cache too; words repeat, so most pre-tokens of a text are hits). */
static PetscErrorCode bpe_cached(InflTokenizer t, const unsigned char *s, int64_t n, InflIdBuf *out)
{
  uint64_t mask = (uint64_t)CACHE_SLOTS - 1, i;
  int64_t  n0 = out->n, e;

  PetscFunctionBegin;
  if (n > CACHE_MAX_BYTES) {
    PetscCall(bpe_word(t, s, n, out));
    PetscFunctionReturn(0);
  }
  if (!t->cache_slot) {
    PetscCall(PetscMalloc5(CACHE_SLOTS, &t->cache_slot, CACHE_ENTRIES + 1, &t->cache_key, CACHE_ENTRIES + 1, &t->cache_val, CACHE_ENTRIES * CACHE_MAX_BYTES, &t->cache_bytes, CACHE_ENTRIES * CACHE_MAX_BYTES, &t->cache_ids));
    t->cache_n = CACHE_ENTRIES; /* emptied below */
  }
  if (t->cache_n == CACHE_ENTRIES) {
    for (int64_t k = 0; k < CACHE_SLOTS; k++) t->cache_slot[k] = -1;
    t->cache_n      = 0;
    t->cache_key[0] = t->cache_val[0] = 0;
  }
  for (i = hash_bytes((const char *)s, (size_t)n) & mask;; i = (i + 1) & mask) {
    e = t->cache_slot[i];
    if (e < 0) break;
    if (t->cache_key[e + 1] - t->cache_key[e] == n && !memcmp(t->cache_bytes + t->cache_key[e], s, (size_t)n)) {
      int64_t m = t->cache_val[e + 1] - t->cache_val[e];
      PetscCall(InflIdBufReserve_Private(out, m));
      PetscCall(PetscArraycpy(out->ids + out->n, t->cache_ids + t->cache_val[e], m));
      out->n += m;
      PetscFunctionReturn(0);
    }
  }
  PetscCall(bpe_word(t, s, n, out));
  e = t->cache_n++;
  t->cache_slot[i]    = e;
  t->cache_key[e + 1] = t->cache_key[e] + n;
  t->cache_val[e + 1] = t->cache_val[e] + (out->n - n0);
  PetscCall(PetscMemcpy(t->cache_bytes + t->cache_key[e], s, (size_t)n));
  PetscCall(PetscArraycpy(t->cache_ids + t->cache_val[e], out->ids + n0, out->n - n0));
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerEncodeAppend_Private(InflTokenizer t, const char text[], size_t len, InflIdBuf *b)
{
  PetscFunctionBegin;
  PetscCheck(t->type != INFL_TOKENIZER_NONE, PETSC_COMM_SELF, PETSC_ERR_ORDER, "the tokenizer has no kind yet; call InflTokenizerSetType or InflTokenizerLoad first");
  if (t->type == INFL_TOKENIZER_BYTE) {
    PetscCall(InflIdBufReserve_Private(b, (int64_t)len));
    for (size_t i = 0; i < len; i++) b->ids[b->n++] = (unsigned char)text[i];
  } else {
    int64_t     bad;
    const char *why;
    PCRE2_SIZE  at = 0;
    PetscCall(InflUTF8Check(text, len, &bad, &why));
    PetscCheck(bad < 0, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "invalid UTF-8 at byte offset %" PRId64 ": %s (byte 0x%02X); GPT-2's tokenizer reads UTF-8 text (convert the file, e.g. iconv -f latin1 -t utf-8)", bad, why, (unsigned)(unsigned char)text[bad]);
    while (at < len) {
      int         rc = pcre2_match(t->re, (PCRE2_SPTR)text, len, at, PCRE2_NO_UTF_CHECK, t->md, NULL);
      PCRE2_SIZE *ov;
      PetscCheck(rc > 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "PCRE2 match failed with code %d at byte offset %zu", rc, (size_t)at);
      ov = pcre2_get_ovector_pointer(t->md);
      /* every character is a letter, a number, white space or something else: the matches tile the text */
      PetscCheck(ov[0] == at && ov[1] > at, PETSC_COMM_SELF, PETSC_ERR_PLIB, "pre-tokenization left bytes [%zu, %zu) unmatched", (size_t)at, (size_t)ov[0]);
      PetscCall(bpe_cached(t, (const unsigned char *)text + ov[0], (int64_t)(ov[1] - ov[0]), b));
      at = ov[1];
    }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerEncode(InflTokenizer t, const char text[], size_t len, int64_t *n, int32_t **ids)
{
  InflIdBuf b = {NULL, 0, 0};
  PetscErrorCode e;

  PetscFunctionBegin;
  *ids = NULL;
  *n   = 0;
  PetscCall(InflIdBufReserve_Private(&b, 1));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  e = InflTokenizerEncodeAppend_Private(t, text, len, &b);
  PetscCall(PetscPopErrorHandler());
  if (e) { /* raised under the return handler, which printed nothing: raise it again with its message */
    char       *specific = NULL;
    const char *generic  = NULL;
    PetscCall(PetscFree(b.ids));
    PetscErrorMessage(e, &generic, &specific);
    SETERRQ(PETSC_COMM_SELF, e, "%s", specific ? specific : generic);
  }
  *ids = b.ids;
  *n   = b.n;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerDecode(InflTokenizer t, const int32_t ids[], int64_t n, size_t *len, char **bytes)
{
  size_t total = 0;

  PetscFunctionBegin;
  *bytes = NULL;
  *len   = 0;
  for (int64_t i = 0; i < n; i++) {
    PetscCheck(ids[i] >= 0 && ids[i] < t->V, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "token %" PRId64 " has id %d, outside the vocabulary [0, %" PetscInt_FMT ")", i, (int)ids[i], t->V);
    total += (size_t)(t->offset[ids[i] + 1] - t->offset[ids[i]]);
  }
  PetscCall(PetscMalloc1(total + 1, bytes));
  for (int64_t i = 0; i < n; i++) {
    size_t k = (size_t)(t->offset[ids[i] + 1] - t->offset[ids[i]]);
    PetscCall(PetscMemcpy(*bytes + *len, t->blob + t->offset[ids[i]], k));
    *len += k;
  }
  (*bytes)[total] = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokenizerDestroy(InflTokenizer *t)
{
  PetscFunctionBegin;
  if (!*t) PetscFunctionReturn(0);
  PetscCall(tokenizer_reset(*t));
  PetscCall(PetscFree(*t));
  PetscFunctionReturn(0);
}
