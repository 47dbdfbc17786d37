#ifndef PSPC_CBLAS_SHIM_H
#define PSPC_CBLAS_SHIM_H
#include <cblas.h>

/// LAPACK's symmetric eigensolver (divide and conquer), carried by OpenBLAS as a Fortran symbol;
/// Debian's build has no LAPACKE, so it is declared here. Column-major, arguments by reference.
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info);
#endif
