/* infl/report.h -- a self-contained HTML report of an influence study, and the page builder it is made of.
 *
 * The page (InflPage) is built from parts -- header, sections, paragraphs, image galleries, bar charts,
 * histograms, text with per-token colours, a provenance footer -- and written as one file that needs no network:
 * images are PNG data URIs (libpng, written to memory), charts are inline SVG.  The markup is XHTML-compatible
 * (every element closed, attributes quoted, text escaped), so it parses both as HTML5 and as XML.  All text passed
 * to the builder is plain text: the builder escapes it (& < > " ').
 *
 * The report (InflReport) reads a scores file (InflScorerSave, infl/score.h) and optionally a self-influence file
 * (infl stage `self`: /self_influence (N), /train_labels (N)), checks them against the train and query data, and
 * renders for each shown query: the query example with its label, its top-k proponents and bottom-k opponents with
 * label, score and train index, a histogram of its scores (the full row of /scores when the file has it, else the
 * top-k and bottom-k scores), and per-layer contributions when the file has /topk/per_layer.  Then the training
 * examples of highest self-influence (likely mislabeled or atypical), and the files' provenance.
 *
 * Token sequences (a language model's scores: the training data is text: or tokens:, set up by the model's data
 * check): each shown query is printed as text -- a prompt/completion query (-query_prompts) as its prompt and its
 * completion, whose tokens alone enter the query loss (/query_sequences/loss_start) -- then its top-k proponent and
 * bottom-k opponent training sequences with their scores.  With per-token terms in the file (infl score
 * -score_per_token: /per_token) every token's background is coloured by its term sum_l Ds_t^T P_l a_t on a diverging
 * scale (red: the token's term raises the score, blue: it lowers it; intensity relative to the row's largest |term|,
 * which the legend gives); the terms of a sequence sum to its score.  Tokens are decoded with the model's tokenizer
 * (InflReportSetTokenizer); a byte-level token that is part of a multi-byte UTF-8 character is shown merged with
 * the tokens that complete it (their terms summed), and bytes that never form valid UTF-8 as \xNN.  Without
 * /per_token the training sequences are read from the -train data and shown uncoloured.  Then the per-layer bars
 * (-score_per_layer), and the training sequences of highest and lowest self-influence.
 *
 * Examples become images when d is a perfect square up to 256 x 256 (d = 784: 28 x 28 Fashion-MNIST / MNIST):
 * grayscale, pixel = round(255 x) for features in [0, 1] (min-max scaled otherwise), enlarged by nearest-neighbour
 * scaling (-report_scale, 3).  Other d are drawn as a strip of d cells (at most 1024) of height 8 before scaling.
 *
 * Options (prefix -report_): -report_queries N (20) queries shown, -report_k K (all of the file's K) proponents and
 * opponents shown per query, -report_self N (24) self-influence examples shown, -report_scale S (3),
 * -report_bins B (40) histogram bins, -report_title TEXT; -class_names a,b,... (shared with the other subcommands).
 */
#ifndef INFL_REPORT_H
#define INFL_REPORT_H

#include <infl/io.h>
#include <infl/tokenizer.h>

/* ---------------------------------------------------------------- PNG */
/* Encode a grayscale image (h, w) of bytes, enlarged `scale` times by nearest neighbour, as PNG in memory.
 * *png is allocated with PetscMalloc (free with PetscFree).  Not collective.  Errors: sizes < 1, libpng failure. */
PetscErrorCode InflPNGEncodeGray(PetscInt w, PetscInt h, const unsigned char pix[], PetscInt scale, unsigned char **png, size_t *len);
/* Base64 (RFC 4648, with padding) of n bytes; *text allocated with PetscMalloc, NUL-terminated. */
PetscErrorCode InflBase64Encode(const unsigned char data[], size_t n, char **text);
/* The image of one example of d features: sizes and bytes (h, w) as described above.  pix holds at least
 * InflImageMaxPixels bytes.  *w = 0 if d = 0. */
#define InflImageMaxPixels 65536
PetscErrorCode InflExampleImage(int64_t d, const float x[], PetscInt *w, PetscInt *h, unsigned char pix[]);

/* ---------------------------------------------------------------- page builder (not collective) */
typedef struct _p_InflPage *InflPage;

/* New page with a title (shown in the header and the window title) and an optional subtitle (NULL). */
PetscErrorCode InflPageCreate(const char title[], const char subtitle[], InflPage *page);
/* Sections nest at most 4 deep; `id` (NULL for none) is an anchor of [A-Za-z0-9_-] characters. */
PetscErrorCode InflPageSectionBegin(InflPage page, const char id[], const char title[]);
PetscErrorCode InflPageSectionEnd(InflPage page);
/* A row: the parts between Begin and End are laid out side by side (wrapping on narrow windows). */
PetscErrorCode InflPageRowBegin(InflPage page);
PetscErrorCode InflPageRowEnd(InflPage page);
/* A paragraph of text (printf-style, the result is escaped); cls NULL or a CSS class ("note", "warn"). */
PetscErrorCode InflPageText(InflPage page, const char cls[], const char fmt[], ...) PETSC_ATTRIBUTE_FORMAT(3, 4);
/* A row of images with captions.  cls of an item: NULL, "query", "pro" (proponent) or "opp" (opponent), which
 * colours its frame.  Each caption line is one line of escaped text; alt is the image's alternative text. */
PetscErrorCode InflPageGalleryBegin(InflPage page, const char title[]);
PetscErrorCode InflPageGalleryImage(InflPage page, PetscInt w, PetscInt h, const unsigned char pix[], PetscInt scale, const char cls[], const char alt[], PetscInt nlines, const char *const lines[]);
PetscErrorCode InflPageGalleryEnd(InflPage page);
/* Horizontal bar chart (inline SVG): n categories, nseries series, values (nseries, n) row-major, any sign
 * (bars grow from a zero line).  series names label the legend (NULL when nseries = 1). */
PetscErrorCode InflPageBarChart(InflPage page, const char title[], PetscInt n, const char *const labels[], PetscInt nseries, const char *const series[], const double values[]);
/* Histogram (inline SVG) of n finite values (non-finite ones are skipped and counted in the caption) in nbins
 * equal bins; nmarks vertical lines at marks[] labelled mark_labels[]; log-scaled counts when logy. */
PetscErrorCode InflPageHistogram(InflPage page, const char title[], int64_t n, const double values[], PetscInt nbins, PetscBool logy, PetscInt nmarks, const double marks[], const char *const mark_labels[]);
/* Text with per-token colours: token i gets a background of weight[i] / max |weight| (red positive, blue negative). */
PetscErrorCode InflPageTokens(InflPage page, const char title[], PetscInt n, const char *const tokens[], const double weights[]);
/* Key/value table; the footer is one such table (written last, whatever the call order). */
PetscErrorCode InflPageTable(InflPage page, const char title[], PetscInt n, const char *const keys[], const char *const values[]);
PetscErrorCode InflPageFooter(InflPage page, const char title[], PetscInt n, const char *const keys[], const char *const values[]);
/* The finished page (sections closed, footer appended); the text stays owned by the page. */
PetscErrorCode InflPageGetHTML(InflPage page, const char **html, size_t *len);
/* Write the page to `path` (not collective); errors name the file. */
PetscErrorCode InflPageWrite(InflPage page, const char path[]);
PetscErrorCode InflPageDestroy(InflPage *page);

/* ---------------------------------------------------------------- report of a study */
typedef struct _p_InflReport *InflReport;

PetscErrorCode InflReportCreate(MPI_Comm comm, InflReport *r);
PetscErrorCode InflReportSetFromOptions(InflReport r);
/* Class names (n entries, NULL entries allowed); copied.  Default: from -class_names. */
PetscErrorCode InflReportSetClassNames(InflReport r, PetscInt n, const char *const names[]);
/* Not collective.  The tokenizer that turns token ids into text, needed when the training data holds token
 * sequences (the model's: infl/tokenizer.h InflTokenizerSetUpForModel); not owned by the report. */
PetscErrorCode InflReportSetTokenizer(InflReport r, InflTokenizer tok);
/* Collective.  Read the scores file and check it: structure (/query_indices, /query_labels, /topk, /bottomk with
 * consistent shapes), train_sha256 equal to train's hash (the error names both), train_examples equal to train's N,
 * query indices inside `query` and their labels equal to query's.  Errors on every rank, naming the file.
 * Token sequences: `query` may be NULL when the file holds the queries' tokens (/query_sequences: always written by
 * infl score for language models); the tokenizer must be set; query labels are not checked (there are none). */
PetscErrorCode InflReportLoadScores(InflReport r, const char path[], InflData train, InflData query);
/* Collective, optional.  Read a self-influence file of the same train data (hash and N checked). */
PetscErrorCode InflReportLoadSelfInfluence(InflReport r, const char path[]);
/* Collective.  Rank 0 builds the page and writes `path` (PATH.partial, renamed); the others wait.  An existing
 * path is an error unless overwrite.  Failures on rank 0 are raised on every rank. */
PetscErrorCode InflReportWrite(InflReport r, const char path[], PetscBool overwrite);
PetscErrorCode InflReportDestroy(InflReport *r);

/* Collective.  The whole report in one call: create, options, tokenizer (NULL for rows of features), load scores
 * (and self_path if non-empty), write. */
PetscErrorCode InflReportFromFiles(MPI_Comm comm, const char scores[], InflData train, InflData query, InflTokenizer tok, const char self_path[], const char out[], PetscBool overwrite);

#endif
