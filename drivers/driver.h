/* Shared pieces of the infl subcommands: option reading, data and model opening, output checks. */
#ifndef INFL_DRIVER_H
#define INFL_DRIVER_H

#include <infl/score.h>
#include <infl/tokenizer.h>

/* The subcommands: each parses its options, creates objects, runs, destroys.  `help` is true under -help: the
 * subcommand then registers (and so lists) its options and returns without doing work. */
PetscErrorCode InflDriverTrain(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverEval(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverFit(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverScore(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverSelf(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverRun(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverInspect(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverIhvp(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverFidelity(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverReport(MPI_Comm comm, PetscBool help);
PetscErrorCode InflDriverProject(MPI_Comm comm, PetscBool help);
/* infl lds: linear datamodeling score by retraining on subsets (drivers/lds.c). */
PetscErrorCode InflDriverLDS(MPI_Comm comm, PetscBool help);
/* infl score -store STORE: scores against a gradient store (drivers/project.c); InflDriverScore hands over to it. */
PetscErrorCode InflDriverStoreScore(MPI_Comm comm, PetscBool help);
/* infl self -store A,B,...: TracIn self-influence from the stores' gradient norms (drivers/project.c). */
PetscErrorCode InflDriverStoreSelf(MPI_Comm comm, PetscBool help);

/* -method ekfac|tracin (listed by -help): is it tracin?  Collective. */
PetscErrorCode DriverMethodIsTracIn(MPI_Comm comm, PetscBool *tracin);
/* infl score -method tracin / infl self -method tracin (self) over -checkpoints (drivers/tracin.c). */
PetscErrorCode InflDriverTracIn(MPI_Comm comm, PetscBool help, PetscBool self);
/* -NAME PATH as a string ("" if absent); required: error naming the option when absent (not under help). */
PetscErrorCode DriverGetString(MPI_Comm comm, const char name[], const char text[], char value[], size_t len, PetscBool required, PetscBool help);
/* Collective.  An error naming option `name` when its comma-separated value lists more than `max` entries (`what`:
 * "stores", "checkpoints", ...): PETSc's array readers would keep the first `max` and drop the rest silently. */
PetscErrorCode DriverCheckListLength(MPI_Comm comm, const char name[], PetscInt max, const char what[]);
/* Collective.  An error naming option `name` (-lds_group_size, -ensemble_group_size) unless group_size is 0 (chosen by
 * infl) or a rank count of comm. */
PetscErrorCode DriverCheckGroupSize(MPI_Comm comm, const char name[], PetscInt group_size);
/* Collective.  A learning rate of TracIn's weights (Pruthi et al. 2020): `value` (a train_lr string) of `what` (the
 * error's subject, e.g. "checkpoint M: metadata") as *eta.  Errors: not a positive finite number (names -tracin_lr). */
PetscErrorCode DriverParseLearningRate(MPI_Comm comm, const char what[], const char value[], double *eta);
/* Collective.  The learning rate of checkpoint `path`: its train_lr metadata (infl train -checkpoint_every writes it),
 * by DriverParseLearningRate; `of` ("" or e.g. " (of the store S)") follows the path in the errors.  Errors: no
 * train_lr recorded, or not a positive finite number (both name -tracin_lr). */
PetscErrorCode DriverCheckpointLearningRate(MPI_Comm comm, const char path[], const char of[], double *eta);
/* Open the data set of option -PREFIX (with -PREFIX_limit N).  Collective. */
PetscErrorCode DriverOpenData(MPI_Comm comm, const char prefix[], PetscBool required, PetscBool help, InflData *data);
/* Model from -model (required); its options (-model_precision single|double) read by InflModelSetFromOptions. Collective. */
/* Collective.  data (may be NULL) must hold rows of features: token data is refused naming the stage and the data. */
PetscErrorCode DriverRequireRows(MPI_Comm comm, const char stage[], InflData data);
PetscErrorCode DriverLoadModel(MPI_Comm comm, const char path[], InflModel *model);
/* Collective.  The tokenizer of a language model loaded from model_path (-tokenizer DIR, else the files beside the
 * model, else byte-level for 256 tokens: InflTokenizerSetUpForModel); NULL for a model of rows.  Destroy it with
 * InflTokenizerDestroy. */
PetscErrorCode DriverModelTokenizer(MPI_Comm comm, const char model_path[], InflModel model, InflTokenizer *tok);
/* Collective.  For a stage that trains fresh GPT-2s on a study's text (infl lds): its tokenizer found as the stages
 * that read the study's model find it: -tokenizer DIR, else the tokenizer files beside the study's model (-model,
 * else OUTDIR/model of infl run, where infl train and infl run copied them), else none (byte-level).  Found beside
 * the model, the directory becomes -tokenizer (for -gpt2_vocab_size 0 and the prompts) and that of the n data sets
 * (entries may be NULL); beside (len) gets the directory looked in ("" when -tokenizer was given). */
PetscErrorCode DriverStudyTokenizer(MPI_Comm comm, PetscInt n, InflData data[], char beside[], size_t len);
/* Collective.  Text data (text:) for the fresh GPT-2 `model` without -tokenizer is read byte by byte, so its
 * vocab_size must be 256: otherwise one error naming the option, the data set (names[i]: "-train"), the directory
 * looked in beside the study's model (beside, may be NULL or "") and the fixes. */
PetscErrorCode DriverCheckTextVocab(MPI_Comm comm, InflModel model, PetscInt n, InflData data[], const char *const names[], const char beside[]);
/* Prompt/completion queries read from -query_prompts FILE (InflPromptsLoad). */
typedef struct {
  PetscInt Q;
  int64_t *offsets; /* (Q+1) */
  int32_t *tokens, *targets; /* (offsets[Q]) */
  char     hash[65];
} StagePrompts;
/* Collective.  -query_prompts FILE for a language model (InflPromptsLoad with -tokenizer, else the tokenizer beside
 * model_path, else byte-level); error naming the file for a model of rows. */
PetscErrorCode DriverLoadPrompts(MPI_Comm comm, const char path[], const char model_path[], InflModel model, StagePrompts *p);
/* Query indices: -query_indices "3,17,40", "0:100" (range, end exclusive), "0:1000:10" (step) or "@file" (one
 * index per line).  Default 0:8.  Checked against N (error names the index and N). */
PetscErrorCode DriverQueryIndices(MPI_Comm comm, int64_t N, PetscInt *Q, int64_t **idx);
/* The same syntax for option `opt` (default `def` when absent), indices into a set of N (`what` names an entry and
 * `set` the set in errors: "training", "training set"): infl lds -lds_loo. */
PetscErrorCode DriverIndexList(MPI_Comm comm, const char opt[], const char def[], const char what[], const char set[], int64_t N, PetscInt *n, int64_t **idx);
/* Collective: check an output before any work, and lock it.  Errors (every rank, one message): `path` exists and
 * -overwrite is not set; it is a directory or another non-regular file (a device would be replaced by the renamed
 * file); it is the same file (device and inode) as an input of the stage (-model, -factors, -scores, -self, -store, -file,
 * the data files, -query_indices @FILE, -options_file); its directory does not exist or cannot hold a new file
 * (the reason from strerror); another process holds its lock.  Rank 0 then holds an exclusive flock on
 * PATH.partial.lock (holding "host H, pid P", named in the error of a second run) until DriverReleaseOutputs(). */
PetscErrorCode DriverCheckOutput(MPI_Comm comm, const char path[], PetscBool overwrite);
/* As DriverCheckOutput for an output that is a directory of files (a GPT-2 model directory): an existing directory
 * is accepted under -overwrite (the files written into it are replaced, others stay); an existing file is an error. */
PetscErrorCode DriverCheckOutputDirectory(MPI_Comm comm, const char path[], PetscBool overwrite);
/* Before PetscInitialize (plain C, the same on every rank): follow the -options_file arguments of argv and of the
 * PETSC_OPTIONS environment variable, the files PETSc reads by default (~/.petscrc, .petscrc, petscrc, unless
 * -skip_petscrc) and, recursively, the -options_file lines inside those files (read as PETSc
 * reads them: '#' starts a comment, a relative path is taken from the working directory); record every file as an
 * input of the run, which DriverCheckOutput refuses to overwrite.  Returns 0, or 1 with `msg` set: a file that cannot
 * be read (naming the file and the line that includes it), a file that includes itself directly or through a cycle
 * (naming the files and lines: PETSc would recurse until the stack overflows), more than 16 levels or 32 files. */
int DriverScanOptionsFiles(int argc, char **argv, char msg[], size_t len);
/* Unlock and remove the lock files of DriverCheckOutput (rank 0; called by main() at the end of every run). */
void DriverReleaseOutputs(void);
/* Error listing every option that was given but never used (a misspelled option must not be ignored); error naming
 * an option given without a value, or an integer value beyond the 32-bit PetscInt range (other than -*_limit). */
PetscErrorCode DriverCheckUnusedOptions(MPI_Comm comm);
/* Error naming the first option whose value is an integer (or a list of them, as -model_dims) beyond the 32-bit
 * PetscInt range, other than the 64-bit -*_limit counts and the real-valued options: PETSc would wrap it (4294967297
 * becomes 1, a value beyond int64 -1).  Called by main() before a subcommand reads its options, so the message names
 * the option and the value given rather than a check failing on the wrapped value. */
PetscErrorCode DriverCheckIntegerOptions(MPI_Comm comm);
/* Collective.  Does the HDF5 file `path` exist and record model sha256 `hash`, training data `thash` and (if key_name)
 * the root attribute key_name equal to `key`?  Prints a note when it exists for something else (drivers/run.c). */
PetscErrorCode DriverOutputMatches(MPI_Comm comm, const char path[], const char hash[], const char thash[], const char key_name[], const char key[], PetscBool *match);
/* infl run -ensemble M (drivers/ensemble.c): *M > 1 when the option asks for an ensemble (0 under help, after listing
 * the option); InflDriverRunEnsemble then runs the study. */
PetscErrorCode DriverEnsembleRequested(MPI_Comm comm, PetscBool help, PetscInt *M);
/* Collective.  The summary that infl run prints (each of the first nshow queries' top proponents and opponents, and
 * for rows of features the share of top-k proponents sharing the query's label), from the /topk and /bottomk lists of
 * the scores file `scores` of Q queries (the combined scores of infl run -ensemble).  tok: the language model's
 * tokenizer (NULL for rows of features); prompts: the prompt/completion queries or NULL. */
PetscErrorCode DriverPrintSummary(MPI_Comm comm, const char scores[], InflTokenizer tok, InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, PetscInt nshow);
PetscErrorCode InflDriverRunEnsemble(MPI_Comm comm, PetscBool help);
/* Collective.  Mark as used the options of a study's options file that belong to stages a command skips (training,
 * fit, self-influence, summary: drivers/run.c), so that only misspelled options are reported as unused. */
PetscErrorCode DriverStudyOptionsUsed(MPI_Comm comm);
/* Collective.  Reads the options of every stage of a study (DriverStudyOptionsUsed, the scorer's, the report's, the
 * EK-FAC's) and writes the EK-FAC options' key (InflEKFACGetKey, len bytes) into fit_key. */
PetscErrorCode DriverStudyFitKey(MPI_Comm comm, char fit_key[], size_t len);
/* MLP layer sizes: -model_dims if set (checked against the data), else input,256,256,classes of `train`. */
PetscErrorCode DriverMLPDims(MPI_Comm comm, InflData train, PetscInt dims[], PetscInt *nd, PetscBool set);
/* Collective.  Train the MLP dims (nd) with ReLU, initialized from topt->seed (InflModelSetFromOptions: the precision),
 * on `train` (`test` for the epoch lines, may be NULL) with its checkpoint at PATH.partial (resumed when it exists),
 * save it to `path`, remove the checkpoint, and return it loaded from `path` (as a reused model would be). */
PetscErrorCode DriverTrainMLP(MPI_Comm comm, InflData train, InflData test, PetscInt nd, const PetscInt dims[], const InflTrainOptions *topt, const char path[], InflModel *model);
/* Collective.  A fresh GPT-2 of the -gpt2_* options (and -model_precision) initialized with `seed` (InflModelSetUpGPT2). */
PetscErrorCode DriverNewGPT2(MPI_Comm comm, uint64_t seed, InflModel *model);
/* Collective.  As DriverTrainMLP for a GPT-2 of the -gpt2_* options on token data (train and test, which may be NULL,
 * are set up for it): trained with *topt (seed topt->seed), saved at path (a directory, or a .safetensors file with
 * config.json beside it), loaded back. */
PetscErrorCode DriverTrainGPT2(MPI_Comm comm, InflData train, InflData test, const InflTrainOptions *topt, const char path[], InflModel *model);
/* Class names from -class_names "a,b,c" (NULL entries if absent). */
PetscErrorCode DriverClassNames(PetscInt C, char ***names);
/* Collective.  With -class_names and rows data (NULL: nothing): an error unless it names every label of `data` (fewer
 * names than 1 + the largest label); more names are fine (a subset may lack the last classes). */
PetscErrorCode DriverCheckClassNames(MPI_Comm comm, InflData data);

#endif
