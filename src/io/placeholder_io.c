/* placeholder so the layer library exists before its sources */
typedef int infl_io_placeholder;
