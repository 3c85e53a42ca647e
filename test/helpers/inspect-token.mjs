// Lists every object of a SoftHSM2 token with the attributes tests check, read through PKCS#11
// in a separate process (independent of the service's own module instance).
// Usage: SOFTHSM2_CONF=... node inspect-token.mjs <tokenLabel> <userPin>  → JSON on stdout
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const pkcs11js = require('pkcs11js');

const [label, pin] = process.argv.slice(2);
const lib = new pkcs11js.PKCS11();
lib.load(process.env.PKCS11_MODULE || '/usr/lib/softhsm/libsofthsm2.so');
lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
try {
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === label);
  if (!slot) throw new Error(`no token labelled ${label}`);
  const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  lib.C_Login(session, pkcs11js.CKU_USER, pin);
  lib.C_FindObjectsInit(session, []);
  const handles = lib.C_FindObjects(session, 10000);
  lib.C_FindObjectsFinal(session);
  const classNames = { [pkcs11js.CKO_PRIVATE_KEY]: 'private', [pkcs11js.CKO_PUBLIC_KEY]: 'public', [pkcs11js.CKO_SECRET_KEY]: 'secret' };
  const objects = handles.map((handle) => {
    const [cls, id, lbl, token] = lib.C_GetAttributeValue(session, handle, [
      { type: pkcs11js.CKA_CLASS },
      { type: pkcs11js.CKA_ID },
      { type: pkcs11js.CKA_LABEL },
      { type: pkcs11js.CKA_TOKEN },
    ]);
    const objectClass = classNames[cls.value.readUInt32LE(0)] ?? 'other';
    const out = { class: objectClass, id: id.value.toString('hex'), label: lbl.value.toString('utf8'), token: token.value[0] === 1 };
    if (objectClass !== 'other') out.keyType = lib.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_KEY_TYPE }])[0].value.readUInt32LE(0);
    if (objectClass !== 'public') {
      const [sensitive, extractable, privateAttr, neverExtractable, alwaysSensitive] = lib.C_GetAttributeValue(session, handle, [
        { type: pkcs11js.CKA_SENSITIVE },
        { type: pkcs11js.CKA_EXTRACTABLE },
        { type: pkcs11js.CKA_PRIVATE },
        { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
        { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
      ]);
      Object.assign(out, {
        sensitive: sensitive.value[0] === 1,
        extractable: extractable.value[0] === 1,
        private: privateAttr.value[0] === 1,
        neverExtractable: neverExtractable.value[0] === 1,
        alwaysSensitive: alwaysSensitive.value[0] === 1,
      });
      // Reading CKA_VALUE of a sensitive object must fail.
      try {
        lib.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_VALUE }]);
        out.valueReadable = true;
      } catch {
        out.valueReadable = false;
      }
    }
    return out;
  });
  lib.C_CloseSession(session);
  process.stdout.write(JSON.stringify(objects));
} finally {
  lib.C_Finalize();
}
