/*
 * fault-pkcs11: a PKCS#11 v2.40 module for tests that forwards every call to a real module
 * and, on command, makes chosen functions fail with a chosen CKR code or stall. See README.md
 * next to this file for the control-file format.
 *
 * Self-contained on purpose (no PKCS#11 headers, no -I): test/helpers/fault-module.ts caches the
 * build by a hash of this one file, and it must build with nothing but gcc and libc6-dev.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- The PKCS#11 v2.40 types the function list needs (Unix ABI: natural alignment). ---- */

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV, CK_FLAGS, CK_SLOT_ID, CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_USER_TYPE, CK_MECHANISM_TYPE, CK_NOTIFICATION;
typedef unsigned char CK_BYTE, CK_BBOOL, CK_UTF8CHAR;
typedef CK_BYTE *CK_BYTE_PTR;
typedef CK_UTF8CHAR *CK_UTF8CHAR_PTR;
typedef CK_ULONG *CK_ULONG_PTR;
typedef void *CK_VOID_PTR;
typedef CK_SLOT_ID *CK_SLOT_ID_PTR;
typedef CK_SESSION_HANDLE *CK_SESSION_HANDLE_PTR;
typedef CK_OBJECT_HANDLE *CK_OBJECT_HANDLE_PTR;
typedef CK_MECHANISM_TYPE *CK_MECHANISM_TYPE_PTR;
typedef CK_RV (*CK_NOTIFY)(CK_SESSION_HANDLE, CK_NOTIFICATION, CK_VOID_PTR);
/* Only ever passed through by pointer, so they can stay incomplete. */
typedef struct CK_INFO *CK_INFO_PTR;
typedef struct CK_SLOT_INFO *CK_SLOT_INFO_PTR;
typedef struct CK_TOKEN_INFO *CK_TOKEN_INFO_PTR;
typedef struct CK_MECHANISM_INFO *CK_MECHANISM_INFO_PTR;
typedef struct CK_SESSION_INFO *CK_SESSION_INFO_PTR;
typedef struct CK_ATTRIBUTE *CK_ATTRIBUTE_PTR;
typedef struct CK_MECHANISM *CK_MECHANISM_PTR;
typedef struct CK_VERSION {
  CK_BYTE major;
  CK_BYTE minor;
} CK_VERSION;
typedef struct CK_FUNCTION_LIST CK_FUNCTION_LIST;
typedef CK_FUNCTION_LIST *CK_FUNCTION_LIST_PTR;
typedef CK_FUNCTION_LIST_PTR *CK_FUNCTION_LIST_PTR_PTR;

#define CKR_OK 0x0UL
#define CKR_GENERAL_ERROR 0x5UL
#define CKR_ARGUMENTS_BAD 0x7UL

/*
 * Every v2.40 function, in CK_FUNCTION_LIST order: X(name, parameters, arguments).
 * G marks C_GetFunctionList, which is written by hand below.
 */
#define FAULT_FUNCTIONS(X, G)                                                                                                                                       \
  X(C_Initialize, (CK_VOID_PTR pInitArgs), (pInitArgs))                                                                                                             \
  X(C_Finalize, (CK_VOID_PTR pReserved), (pReserved))                                                                                                               \
  X(C_GetInfo, (CK_INFO_PTR pInfo), (pInfo))                                                                                                                        \
  G(C_GetFunctionList, (CK_FUNCTION_LIST_PTR_PTR ppFunctionList), (ppFunctionList))                                                                                 \
  X(C_GetSlotList, (CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount), (tokenPresent, pSlotList, pulCount))                                   \
  X(C_GetSlotInfo, (CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo), (slotID, pInfo))                                                                                    \
  X(C_GetTokenInfo, (CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo), (slotID, pInfo))                                                                                  \
  X(C_GetMechanismList, (CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList, CK_ULONG_PTR pulCount), (slotID, pMechanismList, pulCount))                       \
  X(C_GetMechanismInfo, (CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo), (slotID, type, pInfo))                                            \
  X(C_InitToken, (CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel), (slotID, pPin, ulPinLen, pLabel))                            \
  X(C_InitPIN, (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen), (hSession, pPin, ulPinLen))                                                   \
  X(C_SetPIN, (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen, CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen),                                \
    (hSession, pOldPin, ulOldLen, pNewPin, ulNewLen))                                                                                                               \
  X(C_OpenSession, (CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify, CK_SESSION_HANDLE_PTR phSession),                               \
    (slotID, flags, pApplication, Notify, phSession))                                                                                                               \
  X(C_CloseSession, (CK_SESSION_HANDLE hSession), (hSession))                                                                                                       \
  X(C_CloseAllSessions, (CK_SLOT_ID slotID), (slotID))                                                                                                              \
  X(C_GetSessionInfo, (CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo), (hSession, pInfo))                                                                   \
  X(C_GetOperationState, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG_PTR pulOperationStateLen),                                             \
    (hSession, pOperationState, pulOperationStateLen))                                                                                                              \
  X(C_SetOperationState,                                                                                                                                            \
    (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG ulOperationStateLen, CK_OBJECT_HANDLE hEncryptionKey, CK_OBJECT_HANDLE hAuthenticationKey), \
    (hSession, pOperationState, ulOperationStateLen, hEncryptionKey, hAuthenticationKey))                                                                           \
  X(C_Login, (CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen), (hSession, userType, pPin, ulPinLen))                    \
  X(C_Logout, (CK_SESSION_HANDLE hSession), (hSession))                                                                                                             \
  X(C_CreateObject, (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phObject),                                     \
    (hSession, pTemplate, ulCount, phObject))                                                                                                                       \
  X(C_CopyObject, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject),          \
    (hSession, hObject, pTemplate, ulCount, phNewObject))                                                                                                           \
  X(C_DestroyObject, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject), (hSession, hObject))                                                                   \
  X(C_GetObjectSize, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize), (hSession, hObject, pulSize))                                    \
  X(C_GetAttributeValue, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount),                                     \
    (hSession, hObject, pTemplate, ulCount))                                                                                                                        \
  X(C_SetAttributeValue, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount),                                     \
    (hSession, hObject, pTemplate, ulCount))                                                                                                                        \
  X(C_FindObjectsInit, (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount), (hSession, pTemplate, ulCount))                                  \
  X(C_FindObjects, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMaxObjectCount, CK_ULONG_PTR pulObjectCount),                            \
    (hSession, phObject, ulMaxObjectCount, pulObjectCount))                                                                                                         \
  X(C_FindObjectsFinal, (CK_SESSION_HANDLE hSession), (hSession))                                                                                                   \
  X(C_EncryptInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey), (hSession, pMechanism, hKey))                                  \
  X(C_Encrypt, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pEncryptedData, CK_ULONG_PTR pulEncryptedDataLen),                  \
    (hSession, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen))                                                                                              \
  X(C_EncryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),           \
    (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))                                                                                              \
  X(C_EncryptFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastEncryptedPart, CK_ULONG_PTR pulLastEncryptedPartLen),                                            \
    (hSession, pLastEncryptedPart, pulLastEncryptedPartLen))                                                                                                        \
  X(C_DecryptInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey), (hSession, pMechanism, hKey))                                  \
  X(C_Decrypt, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedData, CK_ULONG ulEncryptedDataLen, CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen),                  \
    (hSession, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen))                                                                                              \
  X(C_DecryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),            \
    (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))                                                                                              \
  X(C_DecryptFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastPart, CK_ULONG_PTR pulLastPartLen), (hSession, pLastPart, pulLastPartLen))                        \
  X(C_DigestInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism), (hSession, pMechanism))                                                                \
  X(C_Digest, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen),                                 \
    (hSession, pData, ulDataLen, pDigest, pulDigestLen))                                                                                                            \
  X(C_DigestUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen), (hSession, pPart, ulPartLen))                                              \
  X(C_DigestKey, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey), (hSession, hKey))                                                                             \
  X(C_DigestFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen), (hSession, pDigest, pulDigestLen))                                 \
  X(C_SignInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey), (hSession, pMechanism, hKey))                                     \
  X(C_Sign, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),                             \
    (hSession, pData, ulDataLen, pSignature, pulSignatureLen))                                                                                                      \
  X(C_SignUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen), (hSession, pPart, ulPartLen))                                                \
  X(C_SignFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen), (hSession, pSignature, pulSignatureLen))                       \
  X(C_SignRecoverInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey), (hSession, pMechanism, hKey))                              \
  X(C_SignRecover, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),                      \
    (hSession, pData, ulDataLen, pSignature, pulSignatureLen))                                                                                                      \
  X(C_VerifyInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey), (hSession, pMechanism, hKey))                                   \
  X(C_Verify, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen),                                \
    (hSession, pData, ulDataLen, pSignature, ulSignatureLen))                                                                                                       \
  X(C_VerifyUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen), (hSession, pPart, ulPartLen))                                              \
  X(C_VerifyFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen), (hSession, pSignature, ulSignatureLen))                           \
  X(C_VerifyRecoverInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey), (hSession, pMechanism, hKey))                            \
  X(C_VerifyRecover, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen, CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen),                    \
    (hSession, pSignature, ulSignatureLen, pData, pulDataLen))                                                                                                      \
  X(C_DigestEncryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),      \
    (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))                                                                                              \
  X(C_DecryptDigestUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),      \
    (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))                                                                                              \
  X(C_SignEncryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen, CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),        \
    (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))                                                                                              \
  X(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),      \
    (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))                                                                                              \
  X(C_GenerateKey, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey),            \
    (hSession, pMechanism, pTemplate, ulCount, phKey))                                                                                                              \
  X(C_GenerateKeyPair,                                                                                                                                              \
    (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pPublicKeyTemplate, CK_ULONG ulPublicKeyAttributeCount,                              \
     CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount, CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey),              \
    (hSession, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount, pPrivateKeyTemplate, ulPrivateKeyAttributeCount, phPublicKey, phPrivateKey))             \
  X(C_WrapKey,                                                                                                                                                      \
    (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hWrappingKey, CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey,                        \
     CK_ULONG_PTR pulWrappedKeyLen),                                                                                                                                \
    (hSession, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen))                                                                                      \
  X(C_UnwrapKey,                                                                                                                                                    \
    (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hUnwrappingKey, CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen,                   \
     CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey),                                                                            \
    (hSession, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, pTemplate, ulAttributeCount, phKey))                                                       \
  X(C_DeriveKey,                                                                                                                                                    \
    (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hBaseKey, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount,                     \
     CK_OBJECT_HANDLE_PTR phKey),                                                                                                                                   \
    (hSession, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey))                                                                                           \
  X(C_SeedRandom, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen), (hSession, pSeed, ulSeedLen))                                                \
  X(C_GenerateRandom, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR RandomData, CK_ULONG ulRandomLen), (hSession, RandomData, ulRandomLen))                              \
  X(C_GetFunctionStatus, (CK_SESSION_HANDLE hSession), (hSession))                                                                                                  \
  X(C_CancelFunction, (CK_SESSION_HANDLE hSession), (hSession))                                                                                                     \
  X(C_WaitForSlotEvent, (CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved), (flags, pSlot, pReserved))

#define FIELD(name, params, args) CK_RV(*name) params;
struct CK_FUNCTION_LIST {
  CK_VERSION version;
  FAULT_FUNCTIONS(FIELD, FIELD)
};

#define ID(name, params, args) ID_##name,
enum { FAULT_FUNCTIONS(ID, ID) FN_COUNT };

#define NAME(name, params, args) #name,
static const char *const fn_names[FN_COUNT] = {FAULT_FUNCTIONS(NAME, NAME)};

typedef CK_RV (*CK_C_GetFunctionList)(CK_FUNCTION_LIST_PTR_PTR);

/* ---- State. Everything but the counters and `target` is guarded by `lock`. ---- */

#define MAX_RULES 64
#define MAX_DUMPS 8
#define MAX_CONTROL_BYTES 65536
#define STALL_STEP_MS 5
#define POLL_MS 10
#define DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"

struct rule {
  int fn; /* -1: every function */
  int stall;
  CK_RV code;
  long long until_ms;
};

/* What identifies one version of the control file; a rename-replaced file always differs. */
struct version {
  int present;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtim, ctim;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST *target; /* atomic: read without the lock on every call */
static CK_FUNCTION_LIST shim_list;
static unsigned long long counts[FN_COUNT]; /* atomic */
static char *control_path;
static struct version seen;
static struct rule rules[MAX_RULES];
static int rule_count;

static pthread_t poller;
static int poller_started;
static int poller_stop;
static pthread_cond_t poller_wake = PTHREAD_COND_INITIALIZER;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int same_version(const struct version *v, const struct stat *st) {
  return v->present && v->dev == st->st_dev && v->ino == st->st_ino && v->size == st->st_size && v->mtim.tv_sec == st->st_mtim.tv_sec &&
         v->mtim.tv_nsec == st->st_mtim.tv_nsec && v->ctim.tv_sec == st->st_ctim.tv_sec && v->ctim.tv_nsec == st->st_ctim.tv_nsec;
}

static int function_id(const char *name) {
  for (int i = 0; i < FN_COUNT; i++)
    if (strcmp(fn_names[i], name) == 0) return i;
  return -2;
}

static int parse_number(const char *text, int base, unsigned long long *out) {
  char *end;
  if (*text == '\0' || *text == '-') return 0;
  errno = 0;
  *out = strtoull(text, &end, base);
  return errno == 0 && *end == '\0';
}

static void write_dump_locked(const char *path) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *out = fopen(tmp, "w");
  if (!out) {
    fprintf(stderr, "fault-pkcs11: cannot write %s: %s\n", tmp, strerror(errno));
    return;
  }
  for (int i = 0; i < FN_COUNT; i++) fprintf(out, "%s %llu\n", fn_names[i], __atomic_load_n(&counts[i], __ATOMIC_RELAXED));
  /* Renamed into place so a reader polling for the file never sees half of it. */
  if (fclose(out) != 0 || rename(tmp, path) != 0) {
    fprintf(stderr, "fault-pkcs11: cannot write %s: %s\n", path, strerror(errno));
    unlink(tmp);
  }
}

static void parse_locked(char *text) {
  char *dumps[MAX_DUMPS];
  int dump_count = 0, line_no = 0;
  rule_count = 0;
  for (char *save_line, *line = strtok_r(text, "\n", &save_line); line; line = strtok_r(NULL, "\n", &save_line)) {
    line_no++;
    while (*line == ' ' || *line == '\t') line++;
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r')) line[--len] = '\0';
    if (len == 0 || line[0] == '#') continue;
    if (strncmp(line, "dump", 4) == 0 && (line[4] == ' ' || line[4] == '\t')) {
      char *path = line + 5;
      while (*path == ' ' || *path == '\t') path++;
      if (*path && dump_count < MAX_DUMPS) dumps[dump_count++] = path;
      continue;
    }
    char *save, *fn = strtok_r(line, " \t", &save), *action = strtok_r(NULL, " \t", &save), *until = strtok_r(NULL, " \t", &save);
    struct rule r = {0};
    unsigned long long value, until_ms;
    r.fn = strcmp(fn, "*") == 0 ? -1 : function_id(fn);
    const char *problem = NULL;
    if (r.fn == -2)
      problem = "unknown function";
    else if (!action || !until || strtok_r(NULL, " \t", &save))
      problem = "expected <FUNCTION|*> <CKR|stall> <UNTIL_EPOCH_MS>";
    else if (strcmp(action, "stall") == 0)
      r.stall = 1;
    else if ((action[0] == '0' && (action[1] == 'x' || action[1] == 'X')) ? parse_number(action + 2, 16, &value) : parse_number(action, 10, &value))
      r.code = (CK_RV)value;
    else
      problem = "action is neither a CKR code nor 'stall'";
    if (!problem && !parse_number(until, 10, &until_ms)) problem = "bad UNTIL_EPOCH_MS";
    if (!problem && rule_count == MAX_RULES) problem = "too many rules";
    if (problem) {
      fprintf(stderr, "fault-pkcs11: %s line %d ignored: %s\n", control_path, line_no, problem);
      continue;
    }
    r.until_ms = (long long)until_ms;
    rules[rule_count++] = r;
  }
  for (int i = 0; i < dump_count; i++) write_dump_locked(dumps[i]);
}

/* Brings `rules` up to date with the control file: one stat() when nothing changed. */
static void refresh_locked(void) {
  struct stat st;
  if (!control_path || stat(control_path, &st) != 0) {
    seen.present = 0;
    rule_count = 0;
    return;
  }
  if (same_version(&seen, &st)) return;
  int fd = open(control_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (fd >= 0) close(fd);
    seen.present = 0;
    rule_count = 0;
    return;
  }
  /* Identity from the opened file, not the earlier stat(): the file may have been replaced in between. */
  seen = (struct version){.present = 1, .dev = st.st_dev, .ino = st.st_ino, .size = st.st_size, .mtim = st.st_mtim, .ctim = st.st_ctim};
  static char buffer[MAX_CONTROL_BYTES + 1];
  size_t used = 0;
  for (ssize_t n; used < MAX_CONTROL_BYTES && (n = read(fd, buffer + used, MAX_CONTROL_BYTES - used)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    used += (size_t)n;
  }
  close(fd);
  buffer[used] = '\0';
  parse_locked(buffer);
}

/* The first line that names `fn` (or *) and has not expired wins. */
static int active_rule(int fn, struct rule *out, long long *now) {
  int found = 0;
  pthread_mutex_lock(&lock);
  refresh_locked();
  *now = now_ms();
  for (int i = 0; i < rule_count && !found; i++) {
    if ((rules[i].fn == fn || rules[i].fn == -1) && *now < rules[i].until_ms) {
      *out = rules[i];
      found = 1;
    }
  }
  pthread_mutex_unlock(&lock);
  return found;
}

/* Returns 1 to forward the call, 0 to answer *rv instead. */
static int gate(int fn, CK_RV *rv) {
  __atomic_fetch_add(&counts[fn], 1, __ATOMIC_RELAXED);
  struct rule r;
  long long now;
  /* Re-checked every step so that clearing the file (or shortening the rule) ends a stall early. */
  while (active_rule(fn, &r, &now)) {
    if (!r.stall) {
      *rv = r.code;
      return 0;
    }
    long long left = r.until_ms - now;
    sleep_ms(left < STALL_STEP_MS ? left : STALL_STEP_MS);
  }
  return 1;
}

/*
 * Called only where callers run on their main thread (C_GetFunctionList, C_Initialize): getenv
 * must not race Node's setenv, and a new FaultControl in a later test must be picked up.
 */
static void read_control_env(void) {
  const char *path = getenv("FAULT_PKCS11_CONTROL");
  pthread_mutex_lock(&lock);
  if (!(path && control_path && strcmp(path, control_path) == 0)) {
    free(control_path);
    control_path = path && *path ? strdup(path) : NULL;
    seen.present = 0;
    rule_count = 0;
  }
  pthread_mutex_unlock(&lock);
}

/* Re-reads the control file even while no PKCS#11 call comes, so `dump` lines are answered promptly. */
static void *poll_loop(void *unused) {
  (void)unused;
  pthread_mutex_lock(&lock);
  while (!poller_stop) {
    refresh_locked();
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += POLL_MS * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&poller_wake, &lock, &deadline);
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

/* Runs on dlclose (pkcs11js close()) and at exit: the poller must not outlive this code. */
__attribute__((destructor)) static void stop_poller(void) {
  if (!poller_started) return;
  pthread_mutex_lock(&lock);
  poller_stop = 1;
  pthread_cond_signal(&poller_wake);
  pthread_mutex_unlock(&lock);
  pthread_join(poller, NULL);
  poller_started = 0;
}

static CK_RV load_target(void) {
  if (__atomic_load_n(&target, __ATOMIC_ACQUIRE)) return CKR_OK;
  CK_RV rv = CKR_OK;
  pthread_mutex_lock(&lock);
  if (!target) {
    const char *path = getenv("FAULT_PKCS11_TARGET");
    if (!path || !*path) path = DEFAULT_TARGET;
    void *handle = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    CK_C_GetFunctionList get = handle ? (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList") : NULL;
    CK_FUNCTION_LIST_PTR list = NULL;
    if (!get) {
      fprintf(stderr, "fault-pkcs11: cannot load the target module %s: %s\n", path, dlerror());
      rv = CKR_GENERAL_ERROR;
    } else if ((rv = get(&list)) != CKR_OK || !list) {
      fprintf(stderr, "fault-pkcs11: C_GetFunctionList of %s answered 0x%lx\n", path, rv);
      if (rv == CKR_OK) rv = CKR_GENERAL_ERROR;
    } else {
      shim_list.version = list->version;
      __atomic_store_n(&target, list, __ATOMIC_RELEASE);
      sigset_t all, old;
      sigfillset(&all);
      /* Signals stay with Node's threads; the poller only ever sleeps and reads a file. */
      pthread_sigmask(SIG_SETMASK, &all, &old);
      poller_stop = 0;
      poller_started = pthread_create(&poller, NULL, poll_loop, NULL) == 0;
      pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
  }
  pthread_mutex_unlock(&lock);
  return rv;
}

/* ---- The entry points: exported by name and listed in shim_list. ---- */

#define FORWARD(name, params, args)                                   \
  CK_RV name params {                                                 \
    CK_RV rv;                                                         \
    if (ID_##name == ID_C_Initialize) read_control_env();             \
    if (!gate(ID_##name, &rv)) return rv;                             \
    if ((rv = load_target()) != CKR_OK) return rv;                    \
    return __atomic_load_n(&target, __ATOMIC_ACQUIRE)->name args;     \
  }
#define SKIP(name, params, args)
FAULT_FUNCTIONS(FORWARD, SKIP)

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList);

#define ENTRY(name, params, args) .name = name,
static CK_FUNCTION_LIST shim_list = {.version = {2, 40}, FAULT_FUNCTIONS(ENTRY, ENTRY)};

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
  CK_RV rv;
  read_control_env();
  if (!gate(ID_C_GetFunctionList, &rv)) return rv;
  if (!ppFunctionList) return CKR_ARGUMENTS_BAD;
  if ((rv = load_target()) != CKR_OK) return rv;
  *ppFunctionList = &shim_list;
  return CKR_OK;
}
