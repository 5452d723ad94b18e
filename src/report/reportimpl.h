/* Private to src/report: the report object, shared by report.c (rows of features, images) and text.c (token
 * sequences of language models). */
#ifndef INFL_REPORTIMPL_H
#define INFL_REPORTIMPL_H
#include <infl/report.h>
#include <infl/tokenizer.h>

#define NPROV 10

typedef struct {
  char  path[PETSC_MAX_PATH_LEN];
  char *keys[NPROV], *values[NPROV];
  int   n;
} Prov;

struct _p_InflReport {
  MPI_Comm  comm;
  PetscInt  nshow, kshow, nself, scale, bins;
  char      title[256];
  PetscInt  ncls;
  char    **names;          /* (ncls) class names, entries may be NULL */
  InflData  train, query;
  /* the scores file */
  PetscBool loaded;
  int64_t   Q, K, N, d;
  int64_t  *qindex, *qlabel; /* (Q) */
  int64_t  *qpred;           /* (Q) the model's predicted classes, when the scores file has them */
  double   *qprob;           /* (Q) their probabilities */
  int64_t  *top_idx, *bot_idx; /* (Q, K) */
  double   *top_s, *bot_s;     /* (Q, K) */
  PetscInt  L;                 /* layers of /topk/per_layer, 0 if absent */
  PetscInt  C;                 /* TracIn: checkpoints (attribute tracin_checkpoints), term c L/C + l of /topk/per_layer is checkpoint c's layer l; else 1 */
  double   *top_layer, *bot_layer; /* (L, Q, K) */
  PetscBool full;              /* the file has /scores (Q, N) */
  PetscBool query_checked;     /* the file's query_sha256 matched the -query data (absent: not checkable) */
  double   *rows;              /* rank 0: (min(Q, nshow), N) rows of /scores */
  char      model_hash[128];
  Prov      prov_scores;
  /* token sequences (text.c): the tokenizer, the queries' tokens and the per-token terms of the file */
  PetscBool     text;         /* the training data holds token sequences */
  InflTokenizer tok;          /* not owned */
  int64_t      *qoff;         /* (Q+1) offsets of the queries' tokens in qtok, NULL if the file has none */
  int32_t      *qtok;         /* (qoff[Q]) */
  int64_t      *qstart;       /* (Q) first token whose prediction enters the query's loss */
  int64_t       R, M;         /* per-token rows (query, training sequence) and their tokens; 0 if absent */
  double       *pt_values;    /* (M) */
  int32_t      *pt_tokens;    /* (M) */
  int64_t      *pt_offsets;   /* (R+1) */
  int64_t      *pt_query, *pt_train; /* (R) */
  int32_t      *pt_kind;      /* (R) +1 proponent, -1 opponent */
  /* the self-influence file */
  PetscBool has_self;
  double   *self;              /* rank 0: (N) */
  Prov      prov_self;
};

typedef struct {
  double  v;
  int64_t i;
} Ranked;

int                   InflReportRankedDesc(const void *a, const void *b);
PETSC_INTERN PetscErrorCode InflReportRankSelf(InflReport r, Ranked **rk, double *mean);
PETSC_INTERN PetscErrorCode InflReportLoadText(InflReport r, hid_t file, const char path[], InflData query);
PETSC_INTERN PetscErrorCode InflReportFreeText(InflReport r);
PETSC_INTERN PetscErrorCode InflReportRenderLayers(InflPage page, InflReport r, PetscInt q);
PETSC_INTERN PetscErrorCode InflReportRenderText(InflPage page, InflReport r, PetscInt nq, PetscInt ks);
#endif
