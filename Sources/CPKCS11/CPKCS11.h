#ifndef CPKCS11_H
#define CPKCS11_H
/* The one C header Trent includes: p11-kit's standard pkcs11.h (Cryptoki 2.40 names). */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>

/* Swift drops macros that contain casts; re-export the few Trent needs as constants. */
static const CK_ULONG CPKCS11_UNAVAILABLE_INFORMATION = CK_UNAVAILABLE_INFORMATION;
static const CK_ULONG CPKCS11_CKR_VENDOR_DEFINED = CKR_VENDOR_DEFINED;

/* CK_GCM_PARAMS as the original PKCS#11 2.40 header declared it (no ulIvBits): some tokens accept only this form. */
typedef struct CPKCS11_GCM_PARAMS_240 {
    CK_BYTE_PTR pIv;
    CK_ULONG ulIvLen;
    CK_BYTE_PTR pAAD;
    CK_ULONG ulAADLen;
    CK_ULONG ulTagBits;
} CPKCS11_GCM_PARAMS_240;
#endif
