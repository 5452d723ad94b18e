# Krylov IHVP (src/curv/ihvp*.c, src/nn/mlp_rop.c): MatShell products and CG solves against dense LAPACK, finite
# differences of the R-op, EK-FAC preconditioning, Krylov queries through the scorer.
infl_test(test_ihvp SOURCES test_ihvp.c LIBS infl_attr infl_curv infl_nn infl_io infl_core)
