# Krylov IHVP (src/curv/ihvp*.c, src/nn/mlp_rop.c): MatShell products and CG solves against dense LAPACK, finite
# differences of the R-op, EK-FAC preconditioning, Krylov queries through the scorer.
infl_test(test_ihvp SOURCES test_ihvp.c LIBS infl_attr infl_curv infl_nn infl_io infl_core)
# infl ihvp -help exits 0 and lists the Krylov and progress options (the subcommand is registered and parses them)
infl_cli_test(test_ihvp_cli_help NP 1 ARGS ihvp -help PASS "-ihvp_curvature" "-progress_interval" FAIL "^infl ihvp: error")
# progress lines of the Krylov solves of infl ihvp and infl fidelity (-progress_interval 0): one per iteration with
# decreasing residuals and an ETA, and the same solution with and without the monitor
infl_script_test(ihvp_progress ihvp_progress.sh TIMEOUT 300)
# Krylov IHVP on the tiny byte-level GPT-2 through the captures: query gradients, empirical and true Fisher block
# products and block CG solves against the model's full backward pass and a Woodbury + LAPACK dense solve, layer
# selections all and mlp; ggn is an error for this type
infl_test(test_ihvp_gpt2 SOURCES test_ihvp_gpt2.c LIBS infl_curv infl_nn infl_io infl_core)
# the Lanczos run of -ihvp_deflate: stopped inside it and in the solve after it (infl ihvp, infl fidelity), resumed to
# the uninterrupted results (also at another rank count); its vectors bounded by -mem_limit; breakdown on 3 examples
infl_script_test(ihvp_deflate_resume ihvp_deflate.sh ARGS resume TIMEOUT 300)
infl_script_test(ihvp_deflate_mem ihvp_deflate.sh ARGS mem TIMEOUT 300)
