/* A self-contained HTML page built from parts: escaped text, PNG images as data URIs, inline SVG charts. */
#include <infl/report.h>
#include <png.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- growable text */
typedef struct {
  char  *s;
  size_t n, cap;
} Buf;

static PetscErrorCode buf_reserve(Buf *b, size_t more)
{
  PetscFunctionBegin;
  if (b->n + more + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    char  *s;
    while (cap < b->n + more + 1) cap *= 2;
    PetscCall(PetscMalloc1(cap, &s));
    if (b->n) PetscCall(PetscMemcpy(s, b->s, b->n));
    s[b->n] = 0;
    PetscCall(PetscFree(b->s));
    b->s   = s;
    b->cap = cap;
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode buf_put(Buf *b, const char *s, size_t n)
{
  PetscFunctionBegin;
  PetscCall(buf_reserve(b, n));
  if (n) PetscCall(PetscMemcpy(b->s + b->n, s, n));
  b->n += n;
  b->s[b->n] = 0;
  PetscFunctionReturn(0);
}

static PetscErrorCode buf_str(Buf *b, const char *s)
{
  PetscFunctionBegin;
  PetscCall(buf_put(b, s, strlen(s)));
  PetscFunctionReturn(0);
}

static PetscErrorCode buf_vprintf(Buf *b, const char *fmt, va_list ap)
{
  va_list aq;
  int     n;

  PetscFunctionBegin;
  va_copy(aq, ap);
  n = vsnprintf(NULL, 0, fmt, aq);
  va_end(aq);
  PetscCheck(n >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "bad format \"%s\"", fmt);
  PetscCall(buf_reserve(b, (size_t)n));
  vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
  b->n += (size_t)n;
  PetscFunctionReturn(0);
}

static PetscErrorCode buf_printf(Buf *b, const char *fmt, ...) PETSC_ATTRIBUTE_FORMAT(2, 3);
static PetscErrorCode buf_printf(Buf *b, const char *fmt, ...)
{
  va_list ap;

  PetscFunctionBegin;
  va_start(ap, fmt);
  PetscCall(buf_vprintf(b, fmt, ap));
  va_end(ap);
  PetscFunctionReturn(0);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not valid. */
static int utf8_len(const unsigned char *s)
{
  int n, i;
  if (s[0] < 0x80) return 1;
  if (s[0] >= 0xC2 && s[0] <= 0xDF) n = 2;
  else if (s[0] >= 0xE0 && s[0] <= 0xEF) n = 3;
  else if (s[0] >= 0xF0 && s[0] <= 0xF4) n = 4;
  else return 0;
  for (i = 1; i < n; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  if (n == 3 && s[0] == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
  if (n == 3 && s[0] == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
  if (n == 4 && s[0] == 0xF0 && s[1] < 0x90) return 0;
  if (n == 4 && s[0] == 0xF4 && s[1] >= 0x90) return 0;
  return n;
}

/* Append text escaped for HTML/XML content and attribute values: & < > " ' become entities, control characters
 * (not allowed in XML) and bytes that are not valid UTF-8 become U+FFFD. */
static PetscErrorCode buf_esc(Buf *b, const char *text)
{
  const unsigned char *s = (const unsigned char *)(text ? text : "");

  PetscFunctionBegin;
  while (*s) {
    int n = utf8_len(s);
    switch (*s) {
    case '&': PetscCall(buf_str(b, "&amp;")); break;
    case '<': PetscCall(buf_str(b, "&lt;")); break;
    case '>': PetscCall(buf_str(b, "&gt;")); break;
    case '"': PetscCall(buf_str(b, "&quot;")); break;
    case '\'': PetscCall(buf_str(b, "&#39;")); break;
    default:
      if (n == 0 || (*s < 0x20 && *s != '\n' && *s != '\t')) {
        PetscCall(buf_str(b, "\xEF\xBF\xBD"));
        n = 1;
      } else PetscCall(buf_put(b, (const char *)s, (size_t)n));
    }
    s += n ? n : 1;
  }
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- base64, PNG, example images */
PetscErrorCode InflBase64Encode(const unsigned char data[], size_t n, char **text)
{
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char             *o;
  size_t            i, j = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(4 * ((n + 2) / 3) + 1, text));
  o = *text;
  for (i = 0; i + 2 < n; i += 3) {
    unsigned v = (unsigned)data[i] << 16 | (unsigned)data[i + 1] << 8 | data[i + 2];
    o[j++]     = tab[v >> 18 & 63];
    o[j++]     = tab[v >> 12 & 63];
    o[j++]     = tab[v >> 6 & 63];
    o[j++]     = tab[v & 63];
  }
  if (i < n) {
    unsigned v = (unsigned)data[i] << 16 | (i + 1 < n ? (unsigned)data[i + 1] << 8 : 0);
    o[j++]     = tab[v >> 18 & 63];
    o[j++]     = tab[v >> 12 & 63];
    o[j++]     = i + 1 < n ? tab[v >> 6 & 63] : '=';
    o[j++]     = '=';
  }
  o[j] = 0;
  PetscFunctionReturn(0);
}

typedef struct {
  unsigned char *p;
  size_t         n, cap;
  int            nomem;
} PngMem;

static void png_mem_write(png_structp png, png_bytep data, png_size_t n)
{
  PngMem *m = (PngMem *)png_get_io_ptr(png);
  if (m->nomem) return;
  if (m->n + n > m->cap) {
    size_t         cap = m->cap ? m->cap : 1024;
    unsigned char *p;
    while (cap < m->n + n) cap *= 2;
    p = (unsigned char *)realloc(m->p, cap);
    if (!p) {
      m->nomem = 1;
      png_error(png, "out of memory");
    }
    m->p   = p;
    m->cap = cap;
  }
  memcpy(m->p + m->n, data, n);
  m->n += n;
}

static void png_mem_flush(png_structp png) { (void)png; }

/* libpng part: 0 on success; errors longjmp back here.  row is (w * scale) bytes, allocated by the caller. */
static int png_encode(PngMem *m, PetscInt w, PetscInt h, const unsigned char *pix, PetscInt scale, unsigned char *row)
{
  png_structp png  = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop   info = png ? png_create_info_struct(png) : NULL;

  if (!png || !info) {
    png_destroy_write_struct(png ? &png : NULL, NULL);
    return 1;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return 1;
  }
  png_set_write_fn(png, m, png_mem_write, png_mem_flush);
  png_set_IHDR(png, info, (png_uint_32)(w * scale), (png_uint_32)(h * scale), 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (PetscInt i = 0; i < h; i++) {
    for (PetscInt j = 0; j < w; j++)
      for (PetscInt s = 0; s < scale; s++) row[j * scale + s] = pix[i * w + j];
    for (PetscInt s = 0; s < scale; s++) png_write_row(png, row);
  }
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return 0;
}

PetscErrorCode InflPNGEncodeGray(PetscInt w, PetscInt h, const unsigned char pix[], PetscInt scale, unsigned char **png, size_t *len)
{
  PngMem         m = {NULL, 0, 0, 0};
  unsigned char *row;
  int            fail;

  PetscFunctionBegin;
  PetscCheck(w >= 1 && h >= 1 && scale >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "PNG of %d x %d pixels, scale %d: sizes must be positive", (int)w, (int)h, (int)scale);
  PetscCheck((int64_t)w * scale <= 1 << 20 && (int64_t)h * scale <= 1 << 20, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "PNG of %d x %d pixels at scale %d is too large", (int)w, (int)h, (int)scale);
  PetscCall(PetscMalloc1((size_t)w * scale, &row));
  fail = png_encode(&m, w, h, pix, scale, row);
  PetscCall(PetscFree(row));
  if (fail) free(m.p);
  PetscCheck(!fail, PETSC_COMM_SELF, m.nomem ? PETSC_ERR_MEM : PETSC_ERR_LIB, "libpng could not encode a %d x %d image%s", (int)(w * scale), (int)(h * scale), m.nomem ? ": out of memory" : "");
  PetscCall(PetscMalloc1(m.n, png));
  PetscCall(PetscMemcpy(*png, m.p, m.n));
  *len = m.n;
  free(m.p);
  PetscFunctionReturn(0);
}

PetscErrorCode InflExampleImage(int64_t d, const float x[], PetscInt *w, PetscInt *h, unsigned char pix[])
{
  int64_t   side = (int64_t)llround(sqrt((double)d)), n;
  PetscBool square = side * side == d && side <= 256 ? PETSC_TRUE : PETSC_FALSE;
  float     lo = 0, hi = 1;

  PetscFunctionBegin;
  *w = *h = 0;
  if (d <= 0) PetscFunctionReturn(0);
  *w = square ? (PetscInt)side : (PetscInt)PetscMin(d, 1024);
  *h = square ? (PetscInt)side : 8;
  n  = square ? d : *w; /* features shown */
  for (int64_t i = 0; i < n; i++)
    if (!(x[i] >= 0 && x[i] <= 1)) { /* not in [0, 1]: min-max scale the finite values */
      lo = INFINITY;
      hi = -INFINITY;
      for (int64_t j = 0; j < n; j++)
        if (isfinite(x[j])) {
          lo = PetscMin(lo, x[j]);
          hi = PetscMax(hi, x[j]);
        }
      break;
    }
  for (int64_t i = 0; i < n; i++) {
    double v = hi > lo && isfinite(x[i]) ? ((double)x[i] - lo) / ((double)hi - lo) : 0;
    pix[i]   = (unsigned char)lround(PetscMin(PetscMax(v, 0.0), 1.0) * 255.0);
  }
  if (!square)
    for (PetscInt r = 1; r < *h; r++) PetscCall(PetscMemcpy(pix + (size_t)r * *w, pix, (size_t)*w));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- the page */
struct _p_InflPage {
  Buf   body, foot;
  char *title, *subtitle;
  int   depth;    /* open sections */
  int   rows;     /* open rows */
  int   gallery;  /* inside a gallery */
  int   finished; /* html assembled */
  Buf   html;
  int   nsvg;     /* ids of SVG elements */
};

static const char css[] =
  "body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1d2433;background:#f3f5f8;font-size:14px}"
  "header{background:#1f3b57;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c9d6e3}"
  "main{max-width:1180px;margin:0 auto;padding:16px 20px}"
  "section{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:12px 18px;margin:14px 0}"
  "section section{border:none;border-top:1px solid #e6eaef;border-radius:0;padding:10px 0 4px;margin:8px 0}"
  "h2{font-size:18px;margin:4px 0 8px}h3{font-size:15px;margin:4px 0 6px}h4{font-size:13px;margin:2px 0 4px;color:#4a5568}"
  "p{margin:6px 0}p.note{color:#5a6678;font-size:12.5px}p.warn{color:#9b2c2c}"
  ".row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}"
  ".gallery{margin:4px 0}.items{display:flex;flex-wrap:wrap;gap:8px}"
  "figure{margin:0;padding:4px;border:2px solid #d5dbe3;border-radius:6px;background:#fafbfc;text-align:center}"
  "figure.query{border-color:#3d5a80;background:#eef3f9}figure.pro{border-color:#2a9d8f}figure.opp{border-color:#e76f51}"
  "figure img{display:block;margin:0 auto;image-rendering:pixelated}"
  "figcaption{font-size:11px;line-height:1.3;margin-top:3px;font-variant-numeric:tabular-nums}"
  ".chart{margin:4px 0}.chart svg{display:block;background:#fff}"
  "table{border-collapse:collapse;font-size:12.5px}td,th{border-bottom:1px solid #e6eaef;padding:3px 10px 3px 0;text-align:left;vertical-align:top}"
  "td.v{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all;white-space:pre-wrap}"
  ".tokens{line-height:1.9;font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}.tokens span{padding:1px 0;border-radius:2px}"
  "footer{max-width:1180px;margin:0 auto 30px;padding:0 20px;color:#4a5568}footer section{background:#f8f9fb}";

PetscErrorCode InflPageCreate(const char title[], const char subtitle[], InflPage *page)
{
  InflPage p;

  PetscFunctionBegin;
  PetscCall(PetscNew(&p));
  PetscCall(PetscStrallocpy(title ? title : "infl report", &p->title));
  if (subtitle) PetscCall(PetscStrallocpy(subtitle, &p->subtitle));
  *page = p;
  PetscFunctionReturn(0);
}

static PetscErrorCode check_open(InflPage p)
{
  PetscFunctionBegin;
  PetscCheck(!p->finished, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "the page is finished (InflPageGetHTML or InflPageWrite was called); no parts can be added");
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageSectionBegin(InflPage p, const char id[], const char title[])
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(p->depth < 4, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "sections nest at most 4 deep");
  PetscCheck(!p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "a section cannot begin inside a gallery");
  if (id) {
    for (const char *c = id; *c; c++) PetscCheck((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-', PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "section id \"%s\": use letters, digits, _ and -", id);
    PetscCall(buf_printf(&p->body, "<section id=\"%s\">", id));
  } else PetscCall(buf_str(&p->body, "<section>"));
  p->depth++;
  if (title) {
    PetscCall(buf_printf(&p->body, "<h%d>", p->depth + 1));
    PetscCall(buf_esc(&p->body, title));
    PetscCall(buf_printf(&p->body, "</h%d>\n", p->depth + 1));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageSectionEnd(InflPage p)
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(p->depth > 0 && !p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "no open section to end (or a gallery is still open)");
  PetscCall(buf_str(&p->body, "</section>\n"));
  p->depth--;
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageRowBegin(InflPage p)
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(!p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "a row cannot begin inside a gallery");
  PetscCall(buf_str(&p->body, "<div class=\"row\">\n"));
  p->rows++;
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageRowEnd(InflPage p)
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(p->rows > 0 && !p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "no open row to end (or a gallery is still open)");
  PetscCall(buf_str(&p->body, "</div>\n"));
  p->rows--;
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageText(InflPage p, const char cls[], const char fmt[], ...)
{
  Buf     t = {NULL, 0, 0};
  va_list ap;

  PetscFunctionBegin;
  PetscCall(check_open(p));
  va_start(ap, fmt);
  PetscCall(buf_vprintf(&t, fmt, ap));
  va_end(ap);
  if (cls) {
    PetscCall(buf_str(&p->body, "<p class=\""));
    PetscCall(buf_esc(&p->body, cls));
    PetscCall(buf_str(&p->body, "\">"));
  } else PetscCall(buf_str(&p->body, "<p>"));
  PetscCall(buf_esc(&p->body, t.s));
  PetscCall(buf_str(&p->body, "</p>\n"));
  PetscCall(PetscFree(t.s));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageGalleryBegin(InflPage p, const char title[])
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(!p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "galleries do not nest");
  PetscCall(buf_str(&p->body, "<div class=\"gallery\">"));
  if (title) {
    PetscCall(buf_str(&p->body, "<h4>"));
    PetscCall(buf_esc(&p->body, title));
    PetscCall(buf_str(&p->body, "</h4>"));
  }
  PetscCall(buf_str(&p->body, "<div class=\"items\">\n"));
  p->gallery = 1;
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageGalleryImage(InflPage p, PetscInt w, PetscInt h, const unsigned char pix[], PetscInt scale, const char cls[], const char alt[], PetscInt nlines, const char *const lines[])
{
  unsigned char *png = NULL;
  size_t         len = 0;
  char          *b64 = NULL;

  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "InflPageGalleryImage outside InflPageGalleryBegin/End");
  if (cls) {
    PetscCall(buf_str(&p->body, "<figure class=\""));
    PetscCall(buf_esc(&p->body, cls));
    PetscCall(buf_str(&p->body, "\">"));
  } else PetscCall(buf_str(&p->body, "<figure>"));
  if (w > 0 && h > 0) {
    PetscCall(InflPNGEncodeGray(w, h, pix, scale, &png, &len));
    PetscCall(InflBase64Encode(png, len, &b64));
    PetscCall(buf_str(&p->body, "<img alt=\""));
    PetscCall(buf_esc(&p->body, alt));
    PetscCall(buf_printf(&p->body, "\" width=\"%d\" height=\"%d\" src=\"data:image/png;base64,", (int)(w * scale), (int)(h * scale)));
    PetscCall(buf_str(&p->body, b64));
    PetscCall(buf_str(&p->body, "\"/>"));
    PetscCall(PetscFree(b64));
    PetscCall(PetscFree(png));
  }
  if (nlines > 0) {
    PetscCall(buf_str(&p->body, "<figcaption>"));
    for (PetscInt i = 0; i < nlines; i++) {
      if (i) PetscCall(buf_str(&p->body, "<br/>"));
      PetscCall(buf_esc(&p->body, lines[i]));
    }
    PetscCall(buf_str(&p->body, "</figcaption>"));
  }
  PetscCall(buf_str(&p->body, "</figure>\n"));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageGalleryEnd(InflPage p)
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "no open gallery to end");
  PetscCall(buf_str(&p->body, "</div></div>\n"));
  p->gallery = 0;
  PetscFunctionReturn(0);
}

static const char *palette[] = {"#2a9d8f", "#e76f51", "#3d5a80", "#e9c46a", "#8d6a9f", "#6c757d"};

/* a number for an axis or bar label */
static void num_text(double v, char *s, size_t n)
{
  if (v == 0) snprintf(s, n, "0");
  else snprintf(s, n, "%.3g", v);
}

static PetscErrorCode chart_begin(InflPage p, const char title[], int W, int H, const char desc[])
{
  PetscFunctionBegin;
  PetscCall(buf_str(&p->body, "<div class=\"chart\">"));
  if (title) {
    PetscCall(buf_str(&p->body, "<h4>"));
    PetscCall(buf_esc(&p->body, title));
    PetscCall(buf_str(&p->body, "</h4>"));
  }
  PetscCall(buf_printf(&p->body, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\"><title>", W, H, W, H));
  PetscCall(buf_esc(&p->body, desc ? desc : (title ? title : "chart")));
  PetscCall(buf_str(&p->body, "</title>\n"));
  PetscFunctionReturn(0);
}

static PetscErrorCode chart_end(InflPage p, const char note[])
{
  PetscFunctionBegin;
  PetscCall(buf_str(&p->body, "</svg>"));
  if (note && note[0]) {
    PetscCall(buf_str(&p->body, "<p class=\"note\">"));
    PetscCall(buf_esc(&p->body, note));
    PetscCall(buf_str(&p->body, "</p>"));
  }
  PetscCall(buf_str(&p->body, "</div>\n"));
  PetscFunctionReturn(0);
}

static PetscErrorCode svg_text(InflPage p, double x, double y, const char anchor[], const char fill[], const char text[])
{
  PetscFunctionBegin;
  PetscCall(buf_printf(&p->body, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" fill=\"%s\">", x, y, anchor, fill));
  PetscCall(buf_esc(&p->body, text));
  PetscCall(buf_str(&p->body, "</text>\n"));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageBarChart(InflPage p, const char title[], PetscInt n, const char *const labels[], PetscInt nseries, const char *const series[], const double values[])
{
  const int lw = 110, vw = 64, pw = 300, bh = 14, gap = 6, top = nseries > 1 ? 24 : 8;
  double    lo = 0, hi = 0, x0, sc;
  int       W = lw + pw + vw + 10, H;
  char      num[64];

  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(n >= 0 && nseries >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "bar chart of %d categories and %d series", (int)n, (int)nseries);
  for (PetscInt i = 0; i < n * nseries; i++)
    if (isfinite(values[i])) {
      lo = PetscMin(lo, values[i]);
      hi = PetscMax(hi, values[i]);
    }
  if (hi == lo) hi = lo + 1;
  sc = pw / (hi - lo);
  x0 = lw + (0 - lo) * sc;
  H  = top + (int)n * ((int)nseries * bh + gap) + 8;
  PetscCall(chart_begin(p, title, W, H, title));
  if (nseries > 1)
    for (PetscInt s = 0; s < nseries; s++) {
      PetscCall(buf_printf(&p->body, "<rect x=\"%d\" y=\"6\" width=\"10\" height=\"10\" fill=\"%s\"/>", lw + (int)s * 150, palette[s % 6]));
      PetscCall(svg_text(p, lw + (int)s * 150 + 14, 15, "start", "#333", series[s] ? series[s] : ""));
    }
  for (PetscInt i = 0; i < n; i++) {
    double y = top + (double)i * ((double)nseries * bh + gap);
    PetscCall(svg_text(p, lw - 6, y + nseries * bh / 2.0 + 4, "end", "#333", labels && labels[i] ? labels[i] : ""));
    for (PetscInt s = 0; s < nseries; s++) {
      double v = values[s * n + i], a, b;
      if (!isfinite(v)) {
        PetscCall(svg_text(p, x0 + 4, y + (double)s * bh + bh - 3, "start", "#999", "n/a"));
        continue;
      }
      a = PetscMin(x0, lw + (v - lo) * sc);
      b = PetscMax(x0, lw + (v - lo) * sc);
      PetscCall(buf_printf(&p->body, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>", a, y + (double)s * bh + 1, PetscMax(b - a, 0.5), bh - 2, palette[s % 6]));
      num_text(v, num, sizeof(num));
      PetscCall(svg_text(p, lw + pw + vw + 6, y + (double)s * bh + bh - 3, "end", "#333", num));
    }
  }
  PetscCall(buf_printf(&p->body, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#555\" stroke-width=\"1\"/>\n", x0, top - 2, x0, H - 6));
  PetscCall(chart_end(p, NULL));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageHistogram(InflPage p, const char title[], int64_t n, const double values[], PetscInt nbins, PetscBool logy, PetscInt nmarks, const double marks[], const char *const mark_labels[])
{
  const int W = 470, H = 190, L = 44, R = 12, T = 18, B = 34, pw = W - L - R, ph = H - T - B;
  double    lo = INFINITY, hi = -INFINITY, bw, cmax = 0;
  int64_t  *count, nbad = 0, nfin = 0;
  char      num[64], note[256] = "";

  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCheck(nbins >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "histogram needs at least one bin, not %d", (int)nbins);
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(values[i])) {
      nbad++;
      continue;
    }
    nfin++;
    lo = PetscMin(lo, values[i]);
    hi = PetscMax(hi, values[i]);
  }
  for (PetscInt m = 0; m < nmarks; m++)
    if (isfinite(marks[m]) && nfin) {
      lo = PetscMin(lo, marks[m]);
      hi = PetscMax(hi, marks[m]);
    }
  if (!nfin) lo = 0, hi = 1;
  if (hi == lo) {
    double e = lo != 0 ? fabs(lo) * 0.5 : 0.5;
    lo -= e;
    hi += e;
  }
  bw = (hi - lo) / (double)nbins;
  PetscCall(PetscCalloc1(nbins, &count));
  for (int64_t i = 0; i < n; i++) {
    int64_t b;
    if (!isfinite(values[i])) continue;
    b = (int64_t)((values[i] - lo) / bw);
    b = PetscMin(PetscMax(b, 0), nbins - 1);
    count[b]++;
  }
  for (PetscInt b = 0; b < nbins; b++) cmax = PetscMax(cmax, (double)count[b]);
  PetscCall(chart_begin(p, title, W, H, title));
  PetscCall(buf_printf(&p->body, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#f7f9fb\" stroke=\"#dde3ea\"/>\n", L, T, pw, ph));
  for (PetscInt b = 0; b < nbins; b++) {
    double hgt, c = (double)count[b];
    if (!count[b]) continue;
    hgt = logy ? ph * log1p(c) / log1p(cmax) : ph * c / cmax;
    PetscCall(buf_printf(&p->body, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#3d5a80\"><title>%.4g to %.4g: %" PRId64 "</title></rect>\n", L + (double)b * pw / nbins + 0.5, T + ph - hgt, PetscMax((double)pw / nbins - 1, 0.5), hgt, lo + b * bw, lo + (b + 1) * bw, count[b]));
  }
  for (PetscInt m = 0; m < nmarks; m++) {
    double x;
    if (!isfinite(marks[m]) || marks[m] < lo || marks[m] > hi) continue;
    x = L + (marks[m] - lo) / (hi - lo) * pw;
    PetscCall(buf_printf(&p->body, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" stroke-width=\"1.5\" stroke-dasharray=\"4 2\"/>\n", x, T, x, T + ph, palette[(m + 1) % 6]));
    PetscCall(svg_text(p, x, T - 5, "middle", palette[(m + 1) % 6], mark_labels && mark_labels[m] ? mark_labels[m] : ""));
  }
  /* axes: x at lo, middle, hi; y at 0 and the largest count */
  for (int t = 0; t < 3; t++) {
    double v = lo + (hi - lo) * t / 2.0;
    num_text(v, num, sizeof(num));
    PetscCall(svg_text(p, L + pw * t / 2.0, T + ph + 14, t == 0 ? "start" : t == 1 ? "middle" : "end", "#333", num));
  }
  PetscCall(svg_text(p, L - 4, T + ph, "end", "#333", "0"));
  PetscCall(PetscSNPrintf(num, sizeof(num), "%.0f", cmax));
  PetscCall(svg_text(p, L - 4, T + 9, "end", "#333", num));
  PetscCall(svg_text(p, L + pw / 2.0, H - 4, "middle", "#555", logy ? "value (bar heights: log(1 + count))" : "value (bar heights: count)"));
  if (nbad) PetscCall(PetscSNPrintf(note, sizeof(note), "%" PRId64 " of %" PRId64 " values are not finite and are not shown.", nbad, n));
  PetscCall(chart_end(p, note));
  PetscCall(PetscFree(count));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageTokens(InflPage p, const char title[], PetscInt n, const char *const tokens[], const double weights[])
{
  double m = 0;

  PetscFunctionBegin;
  PetscCall(check_open(p));
  for (PetscInt i = 0; i < n; i++)
    if (isfinite(weights[i])) m = PetscMax(m, fabs(weights[i]));
  PetscCall(buf_str(&p->body, "<div class=\"chart\">"));
  if (title) {
    PetscCall(buf_str(&p->body, "<h4>"));
    PetscCall(buf_esc(&p->body, title));
    PetscCall(buf_str(&p->body, "</h4>"));
  }
  PetscCall(buf_str(&p->body, "<div class=\"tokens\">"));
  for (PetscInt i = 0; i < n; i++) {
    double a = m > 0 && isfinite(weights[i]) ? fabs(weights[i]) / m : 0;
    PetscCall(buf_printf(&p->body, "<span title=\"%.4g\" style=\"background:rgba(%s,%.3f)\">", weights[i], weights[i] >= 0 ? "214,40,40" : "40,90,214", 0.85 * a));
    PetscCall(buf_esc(&p->body, tokens[i]));
    PetscCall(buf_str(&p->body, "</span>"));
  }
  PetscCall(buf_str(&p->body, "</div></div>\n"));
  PetscFunctionReturn(0);
}

static PetscErrorCode table(Buf *b, const char title[], PetscInt n, const char *const keys[], const char *const values[], int level)
{
  PetscFunctionBegin;
  if (title) {
    PetscCall(buf_printf(b, "<h%d>", level));
    PetscCall(buf_esc(b, title));
    PetscCall(buf_printf(b, "</h%d>", level));
  }
  PetscCall(buf_str(b, "<table>\n"));
  for (PetscInt i = 0; i < n; i++) {
    PetscCall(buf_str(b, "<tr><th>"));
    PetscCall(buf_esc(b, keys[i]));
    PetscCall(buf_str(b, "</th><td class=\"v\">"));
    PetscCall(buf_esc(b, values[i] ? values[i] : ""));
    PetscCall(buf_str(b, "</td></tr>\n"));
  }
  PetscCall(buf_str(b, "</table>\n"));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageTable(InflPage p, const char title[], PetscInt n, const char *const keys[], const char *const values[])
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCall(table(&p->body, title, n, keys, values, 4));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageFooter(InflPage p, const char title[], PetscInt n, const char *const keys[], const char *const values[])
{
  PetscFunctionBegin;
  PetscCall(check_open(p));
  PetscCall(buf_str(&p->foot, "<section>"));
  PetscCall(table(&p->foot, title, n, keys, values, 3));
  PetscCall(buf_str(&p->foot, "</section>\n"));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageGetHTML(InflPage p, const char **html, size_t *len)
{
  PetscFunctionBegin;
  if (!p->finished) {
    PetscCheck(!p->gallery, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "a gallery is still open");
    while (p->rows > 0) PetscCall(InflPageRowEnd(p));
    while (p->depth > 0) PetscCall(InflPageSectionEnd(p));
    PetscCall(buf_str(&p->html, "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\" xml:lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
                                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<meta name=\"generator\" content=\"infl " INFL_VERSION_STRING "\"/>\n<title>"));
    PetscCall(buf_esc(&p->html, p->title));
    PetscCall(buf_str(&p->html, "</title>\n<style>"));
    PetscCall(buf_str(&p->html, css));
    PetscCall(buf_str(&p->html, "</style>\n</head>\n<body>\n<header><h1>"));
    PetscCall(buf_esc(&p->html, p->title));
    PetscCall(buf_str(&p->html, "</h1>"));
    if (p->subtitle) {
      PetscCall(buf_str(&p->html, "<p>"));
      PetscCall(buf_esc(&p->html, p->subtitle));
      PetscCall(buf_str(&p->html, "</p>"));
    }
    PetscCall(buf_str(&p->html, "</header>\n<main>\n"));
    if (p->body.n) PetscCall(buf_put(&p->html, p->body.s, p->body.n));
    PetscCall(buf_str(&p->html, "</main>\n"));
    if (p->foot.n) {
      PetscCall(buf_str(&p->html, "<footer>\n"));
      PetscCall(buf_put(&p->html, p->foot.s, p->foot.n));
      PetscCall(buf_str(&p->html, "</footer>\n"));
    }
    PetscCall(buf_str(&p->html, "</body>\n</html>\n"));
    p->finished = 1;
  }
  *html = p->html.s;
  if (len) *len = p->html.n;
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageWrite(InflPage p, const char path[])
{
  const char *html;
  size_t      len;
  FILE       *f;
  int         ok;

  PetscFunctionBegin;
  PetscCall(InflPageGetHTML(p, &html, &len));
  f = fopen(path, "wb");
  PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot create %s: %s", path, strerror(errno));
  ok = fwrite(html, 1, len, f) == len;
  ok = (fclose(f) == 0) && ok;
  PetscCheck(ok, PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE, "cannot write %s (%zu bytes): %s", path, len, strerror(errno));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPageDestroy(InflPage *page)
{
  PetscFunctionBegin;
  if (!page || !*page) PetscFunctionReturn(0);
  PetscCall(PetscFree((*page)->body.s));
  PetscCall(PetscFree((*page)->foot.s));
  PetscCall(PetscFree((*page)->html.s));
  PetscCall(PetscFree((*page)->title));
  PetscCall(PetscFree((*page)->subtitle));
  PetscCall(PetscFree(*page));
  PetscFunctionReturn(0);
}
