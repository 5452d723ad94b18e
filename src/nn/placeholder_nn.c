/* placeholder so the layer library exists before its sources */
typedef int infl_nn_placeholder;
