#ifndef CPKCS11_H
#define CPKCS11_H
/* The one C header Trent includes: p11-kit's standard pkcs11.h (Cryptoki 2.40 names). */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>

/* Swift drops macros that contain casts; re-export the few Trent needs as constants. */
static const CK_ULONG CPKCS11_UNAVAILABLE_INFORMATION = CK_UNAVAILABLE_INFORMATION;
static const CK_ULONG CPKCS11_CKR_VENDOR_DEFINED = CKR_VENDOR_DEFINED;
#endif
