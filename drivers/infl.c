static const char help[] = "infl: influence functions at HPC scale.\n";
#include <infl/sys.h>

int main(int argc, char **argv)
{
  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  PetscCall(PetscFinalize());
  return 0;
}
