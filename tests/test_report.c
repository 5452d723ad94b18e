/* infl report: a small study (the reference MLP on 256 Fashion-MNIST examples: fit, score with the full matrix and
 * per-layer terms, self-influence) rendered as HTML; every embedded PNG is decoded with libpng and compared pixel by
 * pixel with the data it shows; text is escaped; bad inputs fail on every rank with messages naming the problem.
 * The page-builder parts (tokens, negative bars, non-finite histogram values, strip images) are written to a second
 * file.  tests/test_report.sh checks both files with xmllint. */
static const char help[] = "HTML report of an influence study.\n";

#include <infl/score.h>
#include <infl/report.h>
#include <png.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "io/check.h"

#define FMNIST      "idx:/usr/share/datasets/fashion-mnist/train"
#define FMNIST_TEST "idx:/usr/share/datasets/fashion-mnist/t10k"
#define NTRAIN      256
#define NQUERY      6
#define TOPK        4
#define SHOWQ       4
#define SHOWSELF    10
#define SCALE       3

static PetscErrorCode read_file(const char path[], char **text, size_t *len)
{
  FILE *f = fopen(path, "rb");
  long  n;

  PetscFunctionBegin;
  EXPECT(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  PetscCall(PetscMalloc1((size_t)n + 1, text));
  EXPECT(fread(*text, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
  (*text)[n] = 0;
  fclose(f);
  *len = (size_t)n;
  PetscFunctionReturn(0);
}

static int b64val(char c)
{
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decode base64 text of length n (with padding) into out; *m bytes. */
static PetscErrorCode b64decode(const char *s, size_t n, unsigned char *out, size_t *m)
{
  size_t j = 0;

  PetscFunctionBegin;
  EXPECT(n % 4 == 0, "base64 text of length %zu is not a multiple of 4", n);
  for (size_t i = 0; i < n; i += 4) {
    int v[4];
    for (int k = 0; k < 4; k++) v[k] = s[i + k] == '=' ? 0 : b64val(s[i + k]);
    for (int k = 0; k < 4; k++) EXPECT(v[k] >= 0, "bad base64 character '%c'", s[i + k]);
    unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
    out[j++]   = (unsigned char)(w >> 16);
    if (s[i + 2] != '=') out[j++] = (unsigned char)(w >> 8 & 255);
    if (s[i + 3] != '=') out[j++] = (unsigned char)(w & 255);
  }
  *m = j;
  PetscFunctionReturn(0);
}

/* Decode a PNG in memory with libpng to 8-bit grayscale. */
static PetscErrorCode png_decode(const unsigned char *png, size_t n, unsigned *w, unsigned *h, unsigned char **pix)
{
  png_image img;

  PetscFunctionBegin;
  memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  EXPECT(png_image_begin_read_from_memory(&img, png, n), "libpng cannot read an embedded PNG: %s", img.message);
  img.format = PNG_FORMAT_GRAY;
  *w         = img.width;
  *h         = img.height;
  PetscCall(PetscMalloc1(PNG_IMAGE_SIZE(img), pix));
  EXPECT(png_image_finish_read(&img, NULL, *pix, 0, NULL), "libpng cannot decode an embedded PNG: %s", img.message);
  PetscFunctionReturn(0);
}

/* Every <img alt="query N" | "train N" ... src="data:image/png;base64,..."/> of the page: decode, check the size and
 * that each SCALE x SCALE block equals round(255 x) of the example.  Returns the number of images. */
static PetscErrorCode check_images(const char *html, InflData train, InflData query, int *nimg, int *nquery)
{
  const char *p = html;
  float       x[784];
  int64_t     y;

  PetscFunctionBegin;
  *nimg = *nquery = 0;
  while ((p = strstr(p, "<img alt=\"")) != NULL) {
    char           kind[16];
    long long      idx;
    const char    *src, *end;
    unsigned char *png, *pix;
    size_t         m;
    unsigned       w, h;
    int64_t        i64;
    p += strlen("<img alt=\"");
    EXPECT(sscanf(p, "%15[a-z] %lld", kind, &idx) == 2, "image %d: alternative text \"%.20s\" is not \"query N\" or \"train N\"", *nimg, p);
    src = strstr(p, "src=\"data:image/png;base64,");
    EXPECT(src, "image %d has no PNG data URI", *nimg);
    src += strlen("src=\"data:image/png;base64,");
    end = strchr(src, '"');
    EXPECT(end, "image %d: unterminated data URI", *nimg);
    PetscCall(PetscMalloc1((size_t)(end - src), &png));
    PetscCall(b64decode(src, (size_t)(end - src), png, &m));
    PetscCall(png_decode(png, m, &w, &h, &pix));
    EXPECT(w == 28 * SCALE && h == 28 * SCALE, "image %d (%s %lld) is %u x %u, expected %d x %d", *nimg, kind, idx, w, h, 28 * SCALE, 28 * SCALE);
    i64 = (int64_t)idx;
    if (!strcmp(kind, "query")) {
      PetscCall(InflDataGetExamples(query, 1, &i64, x, &y));
      (*nquery)++;
    } else {
      EXPECT(!strcmp(kind, "train"), "image %d: unknown kind %s", *nimg, kind);
      PetscCall(InflDataGetExamples(train, 1, &i64, x, &y));
    }
    for (unsigned r = 0; r < h; r++)
      for (unsigned c = 0; c < w; c++) {
        int want = (int)lround(x[(r / SCALE) * 28 + c / SCALE] * 255.0);
        EXPECT(pix[r * w + c] == want, "image %d (%s %lld): pixel (%u, %u) is %d, the data gives %d", *nimg, kind, idx, r, c, pix[r * w + c], want);
      }
    PetscCall(PetscFree(png));
    PetscCall(PetscFree(pix));
    (*nimg)++;
    p = end;
  }
  PetscFunctionReturn(0);
}

static int count(const char *html, const char *what)
{
  int n = 0;
  for (const char *p = html; (p = strstr(p, what)) != NULL; p += strlen(what)) n++;
  return n;
}

/* Rank 0 checks the report it wrote (the result is agreed on all ranks by the caller). */
static PetscErrorCode check_report(const char path[], InflData train, InflData query, const char model_hash[])
{
  PetscFunctionBegin;
  {
    char  *html;
    size_t len;
    int    nimg, nq;
    PetscCall(read_file(path, &html, &len));
    PetscCall(check_images(html, train, query, &nimg, &nq));
    EXPECT(nq == SHOWQ, "%s shows %d query images, expected %d", path, nq, SHOWQ);
    EXPECT(nimg == SHOWQ * (1 + 2 * TOPK) + SHOWSELF, "%s has %d images, expected %d queries x (1 + 2 x %d) + %d self-influence", path, nimg, SHOWQ, TOPK, SHOWSELF);
    EXPECT(count(html, "data:image/png;base64,") == nimg, "%s has images without the alternative text of an example", path);
    EXPECT(count(html, "<h4>Per-layer contributions to the scores</h4>") == SHOWQ, "%s: expected one per-layer chart per shown query", path);
    EXPECT(count(html, "<h4>Scores of all 256 training examples</h4>") == SHOWQ, "%s: expected one histogram of the full score row per shown query", path);
    EXPECT(strstr(html, "Highest self-influence"), "%s has no self-influence section", path);
    EXPECT(strstr(html, "; model predicts label "), "%s does not show the model's prediction for the queries", path);
    EXPECT(strstr(html, model_hash), "%s does not show the model hash %s in its provenance", path, model_hash);
    EXPECT(strstr(html, "&lt;Pullover&gt;") && strstr(html, "Dress &amp; co") && strstr(html, "Ankle &quot;boot&quot;"), "%s: class names are not escaped", path);
    EXPECT(!strstr(html, "<Pullover>"), "%s: unescaped class name", path);
    EXPECT(!strstr(html, "src=\"http") && !strstr(html, "href=\"http"), "%s refers to the network", path);
    EXPECT(count(html, "<script") == 0, "%s contains a script", path);
    PetscCall(PetscFree(html));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode write_self(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData train, const char path[])
{
  int64_t        N, d, start, count;
  const float   *x;
  const int64_t *y;
  double        *self;
  hid_t          file;
  const char    *mh, *th;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(train, &N, &d, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, &x, &y));
  PetscCall(PetscMalloc1(PetscMax(count, 1), &self));
  PetscCall(InflSelfInfluence(model, ek, train, 64, self));
  PetscCall(InflH5Create(comm, path, PETSC_TRUE, &file));
  PetscCall(InflModelGetHash(model, &mh));
  PetscCall(InflDataGetHash(train, &th));
  PetscCall(InflH5WriteProvenance(file, comm, "self", mh, th, NULL));
  PetscCall(InflH5WriteRows(file, "/self_influence", H5T_NATIVE_DOUBLE, 1, &N, start, count, self));
  PetscCall(InflH5WriteRows(file, "/train_labels", H5T_NATIVE_INT64, 1, &N, start, count, y));
  PetscCall(InflH5Close(&file));
  PetscCall(PetscFree(self));
  PetscFunctionReturn(0);
}

/* The builder's parts not used by the image report, written for xmllint. */
static PetscErrorCode page_parts(MPI_Comm comm, const char path[])
{
  PetscMPIInt rank;
  InflPage    page;
  const char *tokens[]   = {"The", " <cat>", " sat", " & ", "\"on\"", " the", " mat\x01", " caf\xc3\xa9", " bad\xff"};
  double      weights[]  = {0.1, 2.0, -1.0, 0.0, -0.5, NAN, 0.3, 1.0, -2.0};
  const char *labels[]   = {"a<b", "c&d", "e"};
  const char *series[]   = {"one", "two \"2\""};
  double      bars[]     = {1.5, -2.0, 0.25, -0.5, NAN, 3.0};
  double      hist[]     = {1, 2, 2, 3, 3, 3, NAN, INFINITY, -1};
  double      mark       = 0;
  const char *mlab       = "zero <0>";
  float       strip[50];
  PetscInt    w, h;
  unsigned char pix[InflImageMaxPixels];
  const char *keys[]     = {"key <1>", "key & 2"}, *vals[] = {"value 'one'", "two\nlines"};
  const char *lines[]    = {"strip of 50 features", "min-max scaled"};

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank) PetscFunctionReturn(0);
  for (int i = 0; i < 50; i++) strip[i] = (float)(i - 20);
  PetscCall(InflPageCreate("Parts <&> \"test\"", "subtitle 'x' & <y>", &page));
  PetscCall(InflPageSectionBegin(page, "parts", "Section <one>"));
  PetscCall(InflPageText(page, NULL, "text with <script>alert(%d)</script> & entities", 1));
  PetscCall(InflPageTokens(page, "Tokens", 9, tokens, weights));
  PetscCall(InflPageRowBegin(page));
  PetscCall(InflPageBarChart(page, "Bars <neg>", 3, labels, 2, series, bars));
  PetscCall(InflPageHistogram(page, "Histogram & NaN", 9, hist, 5, PETSC_FALSE, 1, &mark, &mlab));
  PetscCall(InflPageHistogram(page, "Empty", 0, hist, 5, PETSC_TRUE, 0, NULL, NULL));
  PetscCall(InflPageRowEnd(page));
  PetscCall(InflExampleImage(50, strip, &w, &h, pix));
  EXPECT(w == 50 && h == 8 && pix[0] == 0 && pix[49] == 255, "strip image of 50 features: %d x %d, ends %d %d", (int)w, (int)h, pix[0], pix[49]);
  PetscCall(InflPageGalleryBegin(page, "Gallery"));
  PetscCall(InflPageGalleryImage(page, w, h, pix, 2, NULL, "strip <50>", 2, lines));
  PetscCall(InflPageGalleryEnd(page));
  PetscCall(InflPageTable(page, "Table", 2, keys, vals));
  PetscCall(InflPageSectionBegin(page, NULL, "Nested, left open"));
  PetscCall(InflPageFooter(page, "Footer", 2, keys, vals));
  EXPECT_FAIL(PETSC_COMM_SELF, InflPageSectionBegin(page, "bad id", "x"), "use letters", "section id with a space");
  PetscCall(InflPageWrite(page, path));
  EXPECT_FAIL(PETSC_COMM_SELF, InflPageText(page, NULL, "late"), "finished", "text after the page was written");
  {
    const char *html;
    size_t      len;
    PetscCall(InflPageGetHTML(page, &html, &len));
    EXPECT(!strstr(html, "<script>") && strstr(html, "&lt;script&gt;"), "text is not escaped");
    EXPECT(strstr(html, " caf\xc3\xa9") && !strstr(html, "\xff") && !strstr(html, "\x01"), "UTF-8 kept, invalid bytes and control characters replaced");
    EXPECT(count(html, "<section") == count(html, "</section>"), "sections are not all closed");
  }
  PetscCall(InflPageDestroy(&page));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm      comm;
  PetscMPIInt   size;
  char          ref[PETSC_MAX_PATH_LEN], scores[64], selfp[64], html[64], parts[64];
  const char   *src, *mh, *th, *other_hash;
  InflModel     model;
  InflData      train, query, train200;
  InflEKFAC     ek;
  InflScorer    sc;
  const int64_t qidx[NQUERY] = {0, 1, 2, 3, 4, 5};
  float         xq[NQUERY * 784];
  int64_t       yq[NQUERY];
  char          msg[256];

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  src = getenv("INFL_SOURCE_DIR");
  PetscCall(PetscSNPrintf(ref, sizeof(ref), "%s/tests/ref/mlp_small.safetensors", src ? src : ".."));
  PetscCall(PetscSNPrintf(scores, sizeof(scores), "report_np%d_scores.h5", size));
  PetscCall(PetscSNPrintf(selfp, sizeof(selfp), "report_np%d_self.h5", size));
  PetscCall(PetscSNPrintf(html, sizeof(html), "report_np%d.html", size));
  PetscCall(PetscSNPrintf(parts, sizeof(parts), "report_parts_np%d.html", size));

  /* the study */
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, ref));
  PetscCall(InflDataOpen(comm, FMNIST, NTRAIN, &train));
  PetscCall(InflDataOpen(comm, FMNIST_TEST, 16, &query));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "true"));
  PetscCall(PetscOptionsSetValue(NULL, "-score_per_layer", "true"));
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  PetscCall(InflScorerSetTopK(sc, TOPK));
  PetscCall(InflDataGetExamples(query, NQUERY, qidx, xq, yq));
  PetscCall(InflScorerSetQueries(sc, model, ek, NQUERY, xq, yq, qidx));
  PetscCall(InflScorerScore(sc, train));
  PetscCall(InflScorerSave(sc, scores, PETSC_TRUE));
  PetscCall(InflScorerDestroy(&sc));
  PetscCall(write_self(comm, model, ek, train, selfp));
  PetscCall(InflModelGetHash(model, &mh));

  /* the report */
  PetscCall(PetscOptionsSetValue(NULL, "-class_names", "T-shirt/top,Trouser,<Pullover>,Dress & co,Coat,Sandal,Shirt,Sneaker,Bag,Ankle \"boot\""));
  PetscCall(PetscOptionsSetValue(NULL, "-report_queries", "4"));
  PetscCall(PetscOptionsSetValue(NULL, "-report_self", "10"));
  PetscCall(InflReportFromFiles(comm, scores, train, query, NULL, selfp, html, PETSC_TRUE));
  {
    PetscMPIInt rank;
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    InflCallAll(comm, rank == 0 ? check_report(html, train, query, mh) : 0);
  }

  /* bad inputs: every rank fails with the same clear message */
  EXPECT_FAIL(comm, InflReportFromFiles(comm, "no_such_scores.h5", train, query, NULL, NULL, "unused.html", PETSC_TRUE), "no such file", "missing scores file");
  EXPECT_FAIL(comm, InflReportFromFiles(comm, selfp, train, query, NULL, NULL, "unused.html", PETSC_TRUE), "is not an infl scores file", "self-influence file given as scores");
  EXPECT_FAIL(comm, InflReportFromFiles(comm, scores, train, query, NULL, NULL, html, PETSC_FALSE), "exists; pass -overwrite", "existing output");
  EXPECT_FAIL(comm, InflReportFromFiles(comm, scores, train, train, NULL, NULL, "unused.html", PETSC_TRUE), "in the -query data", "query data that was not scored");
  PetscCall(InflDataOpen(comm, FMNIST, 200, &train200));
  PetscCall(InflDataGetHash(train, &th));
  PetscCall(InflDataGetHash(train200, &other_hash));
  PetscCall(PetscSNPrintf(msg, sizeof(msg), "train_sha256 is %s", th));
  EXPECT_FAIL(comm, InflReportFromFiles(comm, scores, train200, query, NULL, NULL, "unused.html", PETSC_TRUE), msg, "other training data: the file's hash");
  PetscCall(PetscSNPrintf(msg, sizeof(msg), "has sha256 %s", other_hash));
  EXPECT_FAIL(comm, InflReportFromFiles(comm, scores, train200, query, NULL, NULL, "unused.html", PETSC_TRUE), msg, "other training data: the data's hash");
  EXPECT(!InflFileExists("unused.html"), "a failed report left unused.html behind");

  PetscCall(page_parts(comm, parts));

  PetscCall(InflDataDestroy(&train200));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflModelDestroy(&model));
  PetscCall(PetscPrintf(comm, "report: %s and %s checked (images decoded and compared with the data, escaping, bad inputs)\n", html, parts));
  PetscCall(PetscFinalize());
  return 0;
}
