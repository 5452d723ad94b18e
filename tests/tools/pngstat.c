/* pngstat FILE.png: the statistics tests/report/browser_check.sh judges a screenshot by, on one line:
 *   "WIDTH HEIGHT MEAN VARIANCE DARK"
 * over every 4th pixel of every 4th row, the luminance of a pixel being the mean of its red, green and blue values
 * (0-255; alpha is ignored), DARK the fraction of those pixels with luminance < 60.  Only 8-bit RGB and RGBA images
 * (what chromium writes) are accepted.  Exit status 0, or 1 with a message on a file that is not such a PNG. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>

/* The rows of an 8-bit RGB or RGBA PNG (bpp 3 or 4 bytes per pixel), or NULL after a message. */
static png_bytep *read_rows(const char *path, png_uint_32 *w, png_uint_32 *h, int *bpp)
{
  FILE         *f = fopen(path, "rb");
  png_structp   png;
  png_infop     info;
  png_bytep    *rows;
  int           depth, ctype;
  unsigned char sig[8];

  if (!f) {
    perror(path);
    return NULL;
  }
  if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8)) {
    fprintf(stderr, "%s: not a PNG\n", path);
    return NULL;
  }
  png  = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  info = png ? png_create_info_struct(png) : NULL;
  if (!info) return NULL;
  if (setjmp(png_jmpbuf(png))) { /* libpng printed the reason */
    fprintf(stderr, "%s: cannot decode the PNG\n", path);
    return NULL;
  }
  png_init_io(png, f);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  png_get_IHDR(png, info, w, h, &depth, &ctype, NULL, NULL, NULL);
  if (depth != 8 || (ctype != PNG_COLOR_TYPE_RGB && ctype != PNG_COLOR_TYPE_RGBA)) {
    fprintf(stderr, "%s: unexpected PNG type: depth %d, colour type %d (expected 8-bit RGB or RGBA)\n", path, depth, ctype);
    return NULL;
  }
  *bpp = ctype == PNG_COLOR_TYPE_RGB ? 3 : 4;
  rows = malloc(*h * sizeof(*rows));
  if (!rows) return NULL;
  for (png_uint_32 y = 0; y < *h; y++)
    if (!(rows[y] = malloc((size_t)*w * *bpp))) return NULL;
  png_read_image(png, rows);
  return rows;
}

int main(int argc, char **argv)
{
  png_uint_32 w, h;
  int         bpp;
  png_bytep  *rows;
  double      sum = 0, sum2 = 0, n = 0, dark = 0, mean;

  if (argc != 2) {
    fprintf(stderr, "usage: pngstat FILE.png\n");
    return 1;
  }
  if (!(rows = read_rows(argv[1], &w, &h, &bpp))) return 1;
  for (png_uint_32 y = 0; y < h; y += 4)
    for (png_uint_32 x = 0; x < w; x += 4) {
      const png_bytep p = rows[y] + (size_t)x * bpp;
      double          v = (p[0] + p[1] + p[2]) / 3.0;
      sum += v;
      sum2 += v * v;
      dark += v < 60;
      n++;
    }
  if (n == 0) {
    fprintf(stderr, "%s: the image is empty\n", argv[1]);
    return 1;
  }
  mean = sum / n;
  printf("%u %u %.3f %.3f %.6f\n", (unsigned)w, (unsigned)h, mean, sum2 / n - mean * mean, dark / n);
  return 0;
}
