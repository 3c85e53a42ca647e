/** What both floors (http-floor.ts, express-floor.ts) answer: the shape of a sign answer. */
export const FLOOR_REPLY = {
  signature: 'MEUCIQDx3k8vJ1nq0mJ2m3m0d8T0qg0B9nq2b1Yw9wA4m7Z0QwIgYk1n3qK0Y8m2v0b5Jd8s1a2Q3r4T5y6U7i8O9p0A1s2=',
  keyId: '00000000-0000-4000-8000-000000000000',
  signingAlgorithm: 'ECDSA_SHA_256',
};
